import json

from click.testing import CliRunner

from banditroute.cli import main

KEYS = {
    "decide_per_s",
    "mabwiser_decide_per_s",
    "decide_ratio_vs_mabwiser",
    "update_per_s",
    "mabwiser_update_per_s",
    "update_ratio_vs_mabwiser",
    "batched_decide_per_s",
    "state_bytes_per_task_type",
    "machine",
}


def test_bench_policy_json_smoke() -> None:
    result = CliRunner().invoke(
        main, ["bench", "policy", "--format", "json", "--iterations", "20", "--models", "4"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert KEYS <= set(data)
    assert {"cpu_model", "cores", "python", "numpy"} <= set(data["machine"])
