#!/usr/bin/env python3
"""Writes the TorchScript fixture of tests/cpp/test_torchscript.cpp: a model built from the
Python modules, traced and saved, with an example input and the output Python computed."""

import argparse
import os

import torch

import torchplastic as tp


class Model(torch.nn.Module):
    """A plastic RNN (retroactive neuromodulation, fan-out) under a linear read-out."""

    def __init__(self):
        super().__init__()
        self.rnn = tp.PlasticRNN(6, 16, rule="retroactive", modulation="fanout")
        self.readout = torch.nn.Linear(16, 3)

    def forward(self, u):
        out, state = self.rnn(u)
        return self.readout(out), state.trace


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out_dir")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    torch.manual_seed(0)
    model = Model().eval()
    u = torch.randn(7, 2, 6)
    with torch.no_grad():
        y, trace = model(u)
    # The example and the expected outputs travel inside the file, as buffers.
    model.register_buffer("example_input", u)
    model.register_buffer("expected_output", y)
    model.register_buffer("expected_trace", trace)
    traced = torch.jit.trace(model, (u,))
    path = os.path.join(args.out_dir, "plastic_rnn_traced.pt")
    traced.save(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
