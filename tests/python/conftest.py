import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

# --shard's (index, count), where given.
SHARD = pytest.StashKey[tuple]()


def pytest_addoption(parser):
    parser.addoption(
        "--shard", default=None, metavar="I/N",
        help="run only every N-th of the selected tests, starting at the I-th (1 ≤ I ≤ N), so "
             "that N processes split a run between them (make test-emulated-asan)")


def pytest_configure(config):
    shard = config.getoption("--shard")
    if shard is None:
        return
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        index, count = 0, 0
    if not 1 <= index <= count:
        raise pytest.UsageError(f"--shard: expected I/N with 1 <= I <= N, got {shard!r}")
    config.stash[SHARD] = index, count


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected theirs
def pytest_collection_modifyitems(config, items):
    if SHARD not in config.stash:
        return
    index, count = config.stash[SHARD]
    # Interleaved, since neighbouring tests are alike in cost: each shard gets its share of
    # every parametrised family.
    kept, others = [], []
    for position, item in enumerate(items):
        (kept if position % count == index - 1 else others).append(item)
    config.hook.pytest_deselected(items=others)
    items[:] = kept
