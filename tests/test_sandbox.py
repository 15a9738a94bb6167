"""The sandbox's data paths: values back without pickle, large inputs in, concurrent runs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ttd_envs.core import wire
from ttd_envs.core.sandbox import Limits


def test_values_come_back_as_plain_data(sandbox):
    source = ("def run(n):\n"
              "    return {'array': np.arange(n, dtype=np.int32), 'pair': (1.5, 'x'), 'floats': [0.5] * 100,\n"
              "            'nested': [[1, 2], None, True], 'nan': float('nan')}\n")
    result = sandbox.run_python(source, "run", kwargs={"n": 5})
    assert result.ok, result.error
    value = result.value
    np.testing.assert_array_equal(value["array"], np.arange(5, dtype=np.int32))
    assert value["array"].dtype == np.int32
    assert value["pair"] == (1.5, "x")
    assert isinstance(value["floats"], np.ndarray) and value["floats"].shape == (100,)
    assert value["nested"] == [[1, 2], None, True]
    assert np.isnan(value["nan"])


def test_malformed_results_are_rejected_not_unpickled():
    with pytest.raises(wire.WireError):
        wire.decode(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    with pytest.raises(wire.WireError):
        wire.encode(np.array([object()], dtype=object))
    message = wire.encode(np.arange(3.0))
    with pytest.raises(wire.WireError, match="length"):
        wire.decode(message + b"trailing")


def test_large_matrix_input_travels_as_npy(sandbox):
    counts = np.random.default_rng(0).poisson(0.3, size=(2_000, 15_000)).astype(np.float32)
    source = "def run():\n    return float(X.astype(np.float64).sum()), X.shape, str(X.dtype)\n"
    result = sandbox.run_python(source, "run", inputs={"X": counts}, limits=Limits(wall_s=60))
    assert result.ok, result.error
    total, shape, dtype = result.value
    assert total == float(counts.astype(np.float64).sum())
    assert tuple(shape) == counts.shape and dtype == "float32"


def test_concurrent_runs_do_not_mix(sandbox):
    source = "import time\ndef run(i):\n    time.sleep(0.2)\n    print('run', i)\n    return i * i\n"
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: sandbox.run_python(source, "run", kwargs={"i": i}), range(16)))
    assert [r.value for r in results] == [i * i for i in range(16)]
    assert all(r.stdout == f"run {i}\n" for i, r in enumerate(results))
    assert len({r.isolation[-1] for r in results}) == 16, "each run gets its own private uid"


def test_status_records_are_validated_field_by_field():
    from ttd_envs.core.sandbox import parse_status

    raw = (b'{"phase": "started", "isolation": ["pid namespace", 7], "host_workdir": "/home"}\n'
           b'not json\n[1, 2]\n'
           b'{"phase": "exited", "exit_code": "0", "signal": 999, "cpu_s": -1, "max_rss_bytes": true, "limit": "x"}\n')
    status = parse_status(raw)
    assert "host_workdir" not in status and status["isolation"] == ["pid namespace"]
    assert "exit_code" not in status and "signal" not in status and "cpu_s" not in status
    assert "max_rss_bytes" not in status and "phase" not in status and "limit" not in status
    good = parse_status(b'{"phase": "exited", "exit_code": 0, "signal": null, "cpu_s": 0.5, "limit": "cpu"}\n')
    assert good == {"phase": "exited", "exit_code": 0, "cpu_s": 0.5, "limit": "cpu"}


def test_unseeded_generators_differ_between_runs(sandbox):
    """Runs fork from one warm zygote; without a reseed every program would draw the same numbers."""
    source = "import random\ndef run():\n    return [random.random(), float(np.random.rand())]\n"
    draws = [sandbox.run_python(source, "run") for _ in range(3)]
    assert all(r.ok for r in draws), [r.error for r in draws]
    values = [tuple(r.value) for r in draws]
    assert len(set(values)) == 3, values
