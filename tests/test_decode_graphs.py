"""ptp.decode.graphs: captured runs are kept per model, the least recently used dropped, and gone with the model.
(Capturing itself needs a GPU: tests/test_decode_engine.py drives it with a stand-in graph on the CPU and for real on
a GPU.)"""

from __future__ import annotations

import gc

import torch

from ptp.decode import graphs


class Model(torch.nn.Module):
    pass


def test_runs_are_kept_per_model_and_key_the_least_recently_used_dropped():
    model, other = Model(), Model()
    made = [graphs.kept_run(model, key, lambda key=key: f"run {key}") for key in range(graphs.KEPT_RUNS)]
    assert graphs.kept_run(model, 0, lambda: "new") == made[0], "a kept run is reused"
    graphs.kept_run(model, "another", lambda: "run another")  # one too many: key 1 is now the least recently used
    expected = [f"run {key}" for key in range(2, graphs.KEPT_RUNS)] + ["run 0", "run another"]
    assert graphs.captured_runs(model) == expected
    assert graphs.kept_run(other, 0, lambda: "other run") == "other run"
    assert graphs.captured_runs(other) == ["other run"]
    graphs.release_graphs(model)
    assert graphs.captured_runs(model) == [] and graphs.captured_runs(other) == ["other run"]


def test_a_dropped_model_takes_its_runs_with_it():
    gc.collect()  # models of earlier tests that only a collection frees would leave the count below
    model = Model()
    graphs.kept_run(model, 0, lambda: "run")
    count = len(graphs._RUNS)
    del model
    gc.collect()
    assert len(graphs._RUNS) == count - 1
    assert not graphs.can_capture(torch.device("cpu")) and graphs.can_capture(torch.device("cuda", 0))
