from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from meta_rl import checkpoint
from meta_rl.checkpoint import (
    CheckpointError,
    CheckpointManager,
    find_latest,
    load_checkpoint,
    newest_loadable,
    numbered_checkpoints,
    save_checkpoint,
)

from fakes import Evil


def make_state(step: int) -> dict:
    rng = np.random.default_rng(1234 + step)
    rng.random(3)  # advance, so the state is not just the seed's
    gen = torch.Generator().manual_seed(99 + step)
    torch.rand(5, generator=gen)
    return {
        "iteration": step,
        "env_steps": 10**12 + step,
        "lr": 0.125,
        "name": "maml_trpo",
        "params": {"w": torch.arange(6.0).reshape(2, 3) * step, "b": torch.zeros(3)},
        "history": [1.5, -2.0, [3, "x"]],
        "np_rng": rng.bit_generator.state,
        "torch_rng": gen.get_state(),
    }


def test_round_trip_restores_values_and_rng_streams(tmp_path):
    state = make_state(3)
    path = tmp_path / "ck.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)

    assert loaded["iteration"] == 3 and loaded["env_steps"] == 10**12 + 3
    assert loaded["lr"] == 0.125 and loaded["name"] == "maml_trpo"
    assert loaded["history"] == [1.5, -2.0, [3, "x"]]
    torch.testing.assert_close(loaded["params"]["w"], torch.tensor([[0, 3, 6], [9, 12, 15.0]]))
    # PCG64 state holds 128-bit ints; they survive weights_only loading exactly.
    assert loaded["np_rng"] == state["np_rng"]
    assert loaded["np_rng"]["state"]["state"] > 2**64

    expected_np = np.random.default_rng(1234 + 3)
    expected_np.random(3)
    restored_np = np.random.default_rng(0)  # its state is replaced below
    restored_np.bit_generator.state = loaded["np_rng"]
    np.testing.assert_array_equal(restored_np.random(4), expected_np.random(4))

    expected_gen = torch.Generator().manual_seed(99 + 3)
    torch.rand(5, generator=expected_gen)
    restored_gen = torch.Generator()
    restored_gen.set_state(loaded["torch_rng"])
    assert torch.equal(torch.rand(4, generator=restored_gen), torch.rand(4, generator=expected_gen))


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_failed_write_keeps_previous_checkpoint_and_leaves_no_temp(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "checkpoints" / "latest.pt"
    save_checkpoint(path, make_state(1))

    def boom(*args, **kwargs):
        raise OSError("disk on fire")

    # By the time fsync/replace runs, the temp file holds the new bytes; a crash now must not
    # reach latest.pt.
    monkeypatch.setattr(checkpoint.os, fail_at, boom)
    with pytest.raises(OSError, match="disk on fire"):
        save_checkpoint(path, make_state(2))
    monkeypatch.undo()

    assert load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest.pt"]


def test_failed_serialisation_touches_nothing(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, make_state(1))

    def partial_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04partial")
        raise RuntimeError("killed mid-save")

    monkeypatch.setattr(checkpoint.torch, "save", partial_save)
    with pytest.raises(RuntimeError, match="killed mid-save"):
        save_checkpoint(path, make_state(2))
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_process_killed_mid_write_leaves_old_latest_and_ignored_temp(tmp_path):
    """A real hard exit (no cleanup handlers) after half of the new file is on disk."""
    manager = CheckpointManager(tmp_path, every=2)
    manager.save(2, make_state(2))
    script = textwrap.dedent(
        f"""
        import os
        import torch
        from meta_rl import checkpoint

        real_write = checkpoint.os.fdopen
        def fdopen(fd, mode):
            f = real_write(fd, mode)
            class Half:
                def __enter__(self): return self
                def __exit__(self, *a): return False
                def write(self, data):
                    f.write(bytes(data)[: len(data) // 2]); f.flush()
                    os._exit(9)  # like SIGKILL: no finally, no atexit
            return Half()
        checkpoint.os.fdopen = fdopen
        m = checkpoint.CheckpointManager({str(tmp_path)!r}, every=2)
        m.save(4, {{"iteration": 4, "w": torch.ones(10000)}})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == 9, result.stderr.decode()

    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    stray = [n for n in names if n not in ("latest.pt", "iter_000002.pt")]
    assert len(stray) == 1 and stray[0].startswith(".tmp-iter_000004.pt.")
    assert (tmp_path / "checkpoints" / stray[0]).stat().st_size > 0
    assert find_latest(tmp_path) == tmp_path / "checkpoints" / "latest.pt"
    assert load_checkpoint(find_latest(tmp_path))["iteration"] == 2

    (tmp_path / "checkpoints" / "latest.pt").unlink()  # even then, the temp is not a candidate
    assert find_latest(tmp_path) == tmp_path / "checkpoints" / "iter_000002.pt"


def test_manager_writes_latest_every_call_and_numbered_every_n(tmp_path):
    manager = CheckpointManager(tmp_path, every=3)
    assert find_latest(tmp_path) is None
    for i in range(8):
        written = manager.save(i, {"iteration": i})
        assert written == tmp_path / "checkpoints" / "latest.pt"
        assert load_checkpoint(written)["iteration"] == i
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["iter_000000.pt", "iter_000003.pt", "iter_000006.pt", "latest.pt"]
    assert load_checkpoint(tmp_path / "checkpoints" / "iter_000006.pt") == {"iteration": 6}
    assert find_latest(tmp_path) == tmp_path / "checkpoints" / "latest.pt"


def test_manager_every_zero_keeps_only_latest(tmp_path):
    manager = CheckpointManager(tmp_path, every=0)
    for i in range(3):
        manager.save(i, {"iteration": i})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["latest.pt"]


def test_find_latest_falls_back_to_highest_numbered(tmp_path):
    d = tmp_path / "checkpoints"
    for i in (5, 40, 7):
        save_checkpoint(d / f"iter_{i:06d}.pt", {"iteration": i})
    (d / "iter_999999.pt.bak").write_bytes(b"x")
    (d / "iter_abc.pt").write_bytes(b"x")
    assert find_latest(tmp_path) == d / "iter_000040.pt"


def test_arbitrary_pickled_objects_are_refused(tmp_path):
    marker = tmp_path / "executed"
    torch_file = tmp_path / "evil.pt"
    torch.save({"iteration": 1, "payload": Evil(marker)}, torch_file)
    refused = r"refused: the file carries code \(fakes\._mark_executed\) and was not"
    with pytest.raises(CheckpointError, match=refused) as info:
        load_checkpoint(torch_file)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)

    plain_pickle = tmp_path / "evil.pkl"
    plain_pickle.write_bytes(pickle.dumps({"payload": Evil(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=r"refused: the file carries code"):
        load_checkpoint(plain_pickle)
    assert not marker.exists()


def test_non_dict_and_truncated_files_are_errors(tmp_path):
    save_checkpoint(tmp_path / "list.pt", {"x": 1})
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a dict, got list"):
        load_checkpoint(tmp_path / "list.pt")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda good: good[: len(good) // 2], "not a torch checkpoint archive"),
        (lambda good: good[:3], "not a torch checkpoint archive"),  # tiny: not "tampered"
        (lambda good: b"", "0 bytes, not a torch checkpoint archive"),
        (lambda good: bytes(range(256)) * 8, "not a torch checkpoint archive"),
        (lambda good: good[:600] + bytes(200) + good[800:], "archive is corrupted"),
    ],
)
def test_truncated_or_corrupt_files_are_one_line_naming_the_file(tmp_path, damage, reason):
    good_path = tmp_path / "good.pt"
    save_checkpoint(good_path, make_state(1))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(damage(good_path.read_bytes()))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: truncated or corrupt (") and reason in message
    assert "\n" not in message and "weights_only" not in message


def test_unreadable_paths_name_the_os_reason(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing\.pt: cannot read: No such file"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(CheckpointError, match=r"dir\.pt: cannot read: Is a directory"):
        load_checkpoint(tmp_path / "dir.pt")


def test_newest_loadable_skips_bad_files_and_the_one_named(tmp_path):
    d = tmp_path / "checkpoints"
    for i in (2, 4, 6):
        save_checkpoint(d / f"iter_{i:06d}.pt", {"iteration": i})
    (d / "iter_000006.pt").write_bytes(b"torn")
    assert newest_loadable(tmp_path) == d / "iter_000004.pt"
    assert newest_loadable(tmp_path, skip=d / "iter_000004.pt") == d / "iter_000002.pt"
    assert [i for i, _ in numbered_checkpoints(tmp_path)] == [6, 4, 2]


def test_temp_files_are_hidden_and_not_checkpoint_names(tmp_path, monkeypatch):
    seen: list[str] = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", spy)
    save_checkpoint(tmp_path / "checkpoints" / "latest.pt", {"x": 1})
    assert len(seen) == 1 and seen[0].startswith(".tmp-latest.pt.")
    assert not seen[0].endswith(".pt")
