"""DistributedDataParallel over two processes (gloo): ranks stay identical and equal one
process training on the concatenated batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import torchplastic as tp

STEPS, B, T = 3, 4, 5


def make_model(kind="rnn"):
    torch.manual_seed(0)
    cls = tp.PlasticLSTM if kind == "lstm" else tp.PlasticRNN
    return cls(3, 6, rule="retroactive", modulation="fanout", adaptive_threshold=0.1,
               dtype=torch.float64)


def batches():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(T, 2 * B, 3, generator=g, dtype=torch.float64) for _ in range(STEPS)]


def train(model, data, slicer):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for u in data:
        opt.zero_grad()
        out, state = model(slicer(u))
        # Mean over the batch, as DDP averages gradients over ranks.
        loss = out.square().mean() + state.trace.square().mean()
        loss.backward()
        opt.step()


def worker(rank, port, out_dir, kind):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    model = torch.nn.parallel.DistributedDataParallel(make_model(kind))
    train(model, batches(), lambda u: u[:, rank * B:(rank + 1) * B])
    torch.save({k: v.detach() for k, v in model.module.state_dict().items()},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_ddp_two_ranks_equal_single_process(tmp_path, kind):
    mp.spawn(worker, args=(free_port(), str(tmp_path), kind), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    single = make_model(kind)
    train(single, batches(), lambda u: u)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=lambda m: f"ranks differ in {k}: {m}")
        torch.testing.assert_close(r0[k], v, rtol=1e-10, atol=1e-12, msg=lambda m: f"{k}: {m}")
