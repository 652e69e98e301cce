"""Ship a plastic network to C++: torch.export with a dynamic sequence length, then
AOTInductor compiles it into one .pt2 package that examples/cpp/deploy.cpp runs without Python.

    python examples/export_model.py --out out/export          # model.pt2 and an example input
    build/example/deploy out/export/model.pt2 out/export/input.pt

The model is a PlasticRNN (retroactive neuromodulation) with a linear readout; --weights loads
a state_dict saved from the same architecture. --check BINARY runs the C++ program on the
example input and compares its outputs with Python's (what `make test` does).
"""

import argparse
import os
import subprocess
import sys
import time

import torch

import torchplastic as tp


class PlasticClassifier(torch.nn.Module):
    """PlasticRNN → linear readout at every step; returns the readout and the final state."""

    def __init__(self, input_size: int, hidden_size: int, classes: int, rule: str):
        super().__init__()
        self.rnn = tp.PlasticRNN(input_size, hidden_size, rule=rule)
        self.readout = torch.nn.Linear(hidden_size, classes)

    def forward(self, u: torch.Tensor):
        h, state = self.rnn(u)
        return self.readout(h), state


def flat_outputs(outputs):
    """The outputs in the order the C++ program receives them: the pytree leaves (the readout,
    then the PlasticState's fields, None where unused)."""
    return torch.utils._pytree.tree_flatten(outputs)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/export", help="folder for model.pt2, input.pt and expected.pt")
    ap.add_argument("--input-size", type=int, default=8)
    ap.add_argument("--hidden-size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--rule", default="retroactive", choices=tp.rules.RULES)
    ap.add_argument("--weights", help="a state_dict of PlasticClassifier to load (default: random)")
    ap.add_argument("--max-length", type=int, default=4096, help="the longest sequence the package accepts")
    ap.add_argument("--check", metavar="BINARY", help="run this build of examples/cpp/deploy.cpp on "
                    "inputs of two lengths and compare with Python; exit 1 on a mismatch")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    model = PlasticClassifier(args.input_size, args.hidden_size, args.classes, args.rule).eval()
    if args.weights:
        model.load_state_dict(torch.load(args.weights))

    example = torch.randn(16, 2, args.input_size)
    T = torch.export.Dim("T", min=2, max=args.max_length)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: T},))
    start = time.time()
    package = torch._inductor.aoti_compile_and_package(
        program, package_path=os.path.abspath(os.path.join(args.out, "model.pt2")))
    print(f"exported and compiled in {time.time() - start:.0f} s: {package}")

    mismatches = 0
    for length in (16, 41):  # the exported length and another one
        u = torch.randn(length, 2, args.input_size)
        input_path = os.path.join(args.out, f"input_T{length}.pt")
        torch.save(u, input_path)
        with torch.no_grad():
            expected = flat_outputs(model(u))
        torch.save(expected, os.path.join(args.out, f"expected_T{length}.pt"))
        if not args.check:
            continue
        got_path = os.path.join(args.out, f"cpp_T{length}.pt")
        subprocess.run([args.check, package, input_path, got_path], check=True)
        # Written by the program just run; its typed list needs weights_only=False.
        got = torch.load(got_path, weights_only=False)
        if len(got) != len(expected):
            print(f"T={length}: C++ gave {len(got)} outputs, Python {len(expected)}")
            mismatches += 1
            continue
        for k, (a, b) in enumerate(zip(got, expected)):
            if (a is None) != (b is None):
                print(f"T={length}: output {k} is {a!r} in C++, {b!r} in Python")
                mismatches += 1
            elif a is not None and (a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-6)):
                print(f"T={length}: output {k} differs: max |C++ − Python| = {(a - b).abs().max():.3g}")
                mismatches += 1
        print(f"T={length}: the C++ outputs match Python's ({len(got)} outputs)")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
