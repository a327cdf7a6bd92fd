"""Starting outside the repository, without a broker: init, the packaged configuration, the data folder,
and the sentence a client gets when nothing answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from banditroute.cli import main
from banditroute.config import PACKAGED_CONFIG, RouterConfig, resolve_config_dir
from banditroute.kafka.groups import GroupStatus, explain_no_answer
from banditroute.settings import Settings
from banditroute.sim.scenario import Scenario


def test_init_writes_a_loadable_commented_config_and_keeps_existing_files(tmp_path: Path) -> None:
    runner = CliRunner()
    target = tmp_path / "deep" / "config"
    first = runner.invoke(main, ["init", str(target)])
    assert first.exit_code == 0, first.output
    for name in ("models.yaml", "policy.yaml", "rules.yaml", "scenarios/default.yaml"):
        text = (target / name).read_text()
        assert text.lstrip().startswith("#"), f"{name} has no explaining comment"
    config = RouterConfig.load(target)
    assert {m.name for m in config.models} == {"gpt-large", "mid-tier", "small-fast"}
    assert Scenario.load(target / "scenarios" / "default.yaml").task_types

    (target / "rules.yaml").write_text("rules: []\n")
    again = runner.invoke(main, ["init", str(target)])
    assert again.exit_code == 1 and "not overwriting" in again.output
    assert (target / "rules.yaml").read_text() == "rules: []\n"
    forced = runner.invoke(main, ["init", str(target), "--force"])
    assert forced.exit_code == 0
    assert (target / "rules.yaml").read_text() == (PACKAGED_CONFIG / "rules.yaml").read_text()


def test_config_folder_falls_back_to_packaged_defaults_only_when_implicit(tmp_path: Path) -> None:
    missing = tmp_path / "config"
    assert resolve_config_dir(missing, explicit=False) == (PACKAGED_CONFIG, True)
    assert resolve_config_dir(missing, explicit=True) == (missing, False)
    missing.mkdir()
    assert resolve_config_dir(missing, explicit=False) == (missing, False)


def test_worker_says_what_is_wrong_with_its_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("BANDITROUTE_DATA_DIR", str(blocker / "worker"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["worker", "--check"])
    assert result.exit_code == 1
    assert f"cannot create the data folder {blocker / 'worker'}: Not a directory" in result.output

    monkeypatch.setenv("BANDITROUTE_DATA_DIR", str(blocker))
    result = CliRunner().invoke(main, ["worker", "--check"])
    assert result.exit_code == 1
    assert "exists but is not a folder" in result.output


def test_worker_refuses_an_explicit_config_folder_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANDITROUTE_CONFIG_DIR", str(tmp_path / "typo"))
    monkeypatch.setenv("BANDITROUTE_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["worker", "--check"])
    assert result.exit_code == 1
    assert "typo does not exist" in result.output


def test_no_answer_explanations() -> None:
    settings = Settings(topic_prefix="shop", app_id="shop-router")
    nobody = GroupStatus("shop-router.decide", "shop.requests", members=0, lag=3, member_group="shop-router")
    assert explain_no_answer(settings, nobody, 5.0).startswith(
        "no worker is running for shop (group shop-router has no members"
    )
    behind = GroupStatus("shop-router.decide", "shop.requests", members=2, lag=1200)
    assert explain_no_answer(settings, behind, 5.0) == (
        "workers are running but did not answer within 5 s (lag 1200)"
    )
    no_topic = GroupStatus("shop-router.decide", "shop.requests", members=0, lag=None)
    assert "topic shop.requests does not exist" in explain_no_answer(settings, no_topic, 5.0)
    assert "could not ask the broker" in explain_no_answer(settings, None, 5.0)
