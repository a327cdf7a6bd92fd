"""The router's configuration as data: models, task-type objectives, join windows and rules.

Read from ``config/`` (``models.yaml``, ``policy.yaml``, ``rules.yaml``) at start, reloaded when a file
changes, and amended at runtime by catalog events. The :class:`Registry` turns both into the current
:class:`~banditroute.routing.RoutingSnapshot`, which is what the agents read; its ``version`` changes whenever
anything in it does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from banditroute.core import ModelSpec, Rule, TaskPolicy, TaskState
from banditroute.core.join_policy import JoinPolicy
from banditroute.core.pooling import DEFAULT_MAX_STRENGTH
from banditroute.limits import Limits
from banditroute.routing import TENANT_SEPARATOR, RoutingSnapshot, task_type_of

if TYPE_CHECKING:
    from banditroute.settings import Settings


PACKAGED_CONFIG = Path(__file__).parent / "data" / "config"
"""The starting configuration shipped with the package (what ``banditroute init`` writes)."""
DEFAULT_SCENARIO = PACKAGED_CONFIG / "scenarios" / "default.yaml"


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid; the message names the file and the field."""


def resolve_config_dir(config_dir: Path, explicit: bool) -> tuple[Path, bool]:
    """The folder to read and whether it is the packaged default.

    A folder that was set explicitly (``BANDITROUTE_CONFIG_DIR``, ``--config``) is used as given, so a typo
    fails loudly; the implicit ``./config`` falls back to the packaged defaults when it does not exist.
    """
    if explicit or config_dir.is_dir():
        return config_dir, False
    return PACKAGED_CONFIG, True


def config_dir_of(settings: Settings) -> tuple[Path, bool]:
    """:func:`resolve_config_dir` for ``settings.config_dir`` (explicit when set in the environment)."""
    return resolve_config_dir(settings.config_dir, "config_dir" in settings.model_fields_set)


CONFIG_FILES = ("models", "policy", "rules")
"""The configuration files (``<name>.yaml``), in the folder and in a config-topic document."""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _parse_yaml(where: str, text: str) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    return data


def files_version(texts: Mapping[str, str]) -> str:
    """The version a decision records for configuration read from files: a hash of the three texts."""
    digest = hashlib.sha256()
    for name in CONFIG_FILES:
        digest.update(texts.get(name, "").encode() + b"\0")
    return f"files-{digest.hexdigest()[:12]}"


def _join_policy(where: str, data: Mapping[str, Any]) -> JoinPolicy:
    allowed = {"wait_s", "on_timeout", "default_reward", "learn_late", "keep_joined_s"}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown join settings {sorted(unknown)}; allowed: {sorted(allowed)}")
    policy = JoinPolicy(**{k: data[k] for k in data})
    if policy.on_timeout not in ("none", "default_reward"):
        raise ConfigError(f"{where}: join.on_timeout must be 'none' or 'default_reward'")
    if not 0.0 <= float(policy.default_reward) <= 1.0:
        raise ConfigError(f"{where}: join.default_reward must be in [0, 1]")
    if float(policy.wait_s) <= 0:
        raise ConfigError(f"{where}: join.wait_s must be > 0")
    return replace(policy, wait_s=float(policy.wait_s), default_reward=float(policy.default_reward))


def _pooling_strength(where: str, doc: Any) -> float:
    """policy.yaml ``pooling``: ``{max_strength: N}`` (N >= 0; missing means the default)."""
    if doc is None:
        return DEFAULT_MAX_STRENGTH
    if not isinstance(doc, Mapping) or set(doc) - {"max_strength"}:
        raise ConfigError(f"{where}: pooling must be a mapping with max_strength only")
    value = doc.get("max_strength", DEFAULT_MAX_STRENGTH)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise ConfigError(f"{where}: pooling.max_strength must be a number >= 0, got {value!r}")
    return float(value)


BUDGET_SPLITS = ("sampled", "mean", "off")
"""policy.yaml ``budget_split``: how task types with the same budget divide it (:mod:`banditroute.core.budget`)."""


def _budget_split(where: str, value: Any) -> str:
    """policy.yaml ``budget_split``: one of :data:`BUDGET_SPLITS` (missing means ``sampled``)."""
    if value is None:
        return "sampled"
    if value is False:  # YAML reads a bare ``off`` as false
        return "off"
    if not isinstance(value, str) or value not in BUDGET_SPLITS:
        raise ConfigError(f"{where}: budget_split must be one of {', '.join(BUDGET_SPLITS)}, got {value!r}")
    return value


@dataclass(frozen=True)
class RouterConfig:
    """A validated snapshot of ``config/``."""

    models: tuple[ModelSpec, ...]
    default_policy: Mapping[str, Any]
    task_policies: Mapping[str, Mapping[str, Any]]
    default_join: JoinPolicy
    task_joins: Mapping[str, JoinPolicy]
    rules: tuple[Rule, ...]
    per_tenant: frozenset[str] | bool = frozenset()
    shadow: Mapping[str, Any] | None = None
    """A candidate policy run beside the live one: ``{name, <task policy overrides>}`` (policy.yaml ``shadow``)."""
    sources: Mapping[str, float] = field(default_factory=dict)
    limits: Limits = Limits()
    """Caps on client-named keys (policy.yaml ``limits``, see :mod:`banditroute.limits`)."""
    version: str = "1"
    """What decisions record as ``policy.version``: ``files-<hash>`` or ``config-v<N>`` (the config topic)."""
    pooled_prior_strength: float = DEFAULT_MAX_STRENGTH
    """policy.yaml ``pooling.max_strength``: the cap on the observations a pooled prior is worth; 0 turns
    pooling across task types off (:mod:`banditroute.core.pooling`)."""
    budget_split: str = "sampled"
    """policy.yaml ``budget_split``: ``sampled`` or ``mean`` divide one budget over the task types that share it
    (:func:`banditroute.core.budget.split_offsets`); ``off``: each task type paces to its own budget."""

    @classmethod
    def load(cls, config_dir: Path) -> RouterConfig:
        """Read and validate the three files; a missing file means its defaults."""
        if not config_dir.is_dir():
            raise ConfigError(f"config folder {config_dir} does not exist (set BANDITROUTE_CONFIG_DIR)")
        paths = {n: config_dir / f"{n}.yaml" for n in CONFIG_FILES}
        texts = {n: _read_text(p) for n, p in paths.items()}
        config = cls.parse(texts, {n: str(p) for n, p in paths.items()}, files_version(texts))
        sources = {str(p): p.stat().st_mtime for p in paths.values() if p.exists()}
        return replace(config, sources=sources)

    @classmethod
    def parse(cls, texts: Mapping[str, str], where: Mapping[str, str], version: str) -> RouterConfig:
        """Validate the three YAML texts (``texts[name]``; missing or empty means defaults); errors name
        ``where[name]``."""
        paths = where
        models_doc = _parse_yaml(paths["models"], texts.get("models", ""))
        policy_doc = _parse_yaml(paths["policy"], texts.get("policy", ""))
        rules_doc = _parse_yaml(paths["rules"], texts.get("rules", ""))
        try:
            models = tuple(ModelSpec.from_mapping(m) for m in models_doc.get("models") or [])
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{paths['models']}: {exc}") from exc
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ConfigError(f"{paths['models']}: model names must be unique")
        defaults = dict(policy_doc.get("defaults") or {})
        default_join = _join_policy(f"{paths['policy']} defaults", defaults.pop("join", None) or {})
        task_policies: dict[str, Mapping[str, Any]] = {}
        task_joins: dict[str, JoinPolicy] = {}
        for task_type, overrides in (policy_doc.get("task_types") or {}).items():
            merged = {**defaults, **(overrides or {})}
            join = merged.pop("join", None)
            task_joins[str(task_type)] = (
                _join_policy(f"{paths['policy']} task_types.{task_type}", {**_as_dict(default_join), **join})
                if join
                else default_join
            )
            task_policies[str(task_type)] = merged
        try:
            TaskPolicy.from_mapping(defaults)
            for task_type, mapping in task_policies.items():
                try:
                    TaskPolicy.from_mapping(mapping)
                except ValueError as exc:
                    raise ValueError(f"task_types.{task_type}: {exc}") from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{paths['policy']}: {exc}") from exc
        per_tenant_raw = policy_doc.get("per_tenant") or []
        per_tenant: frozenset[str] | bool = (
            per_tenant_raw if isinstance(per_tenant_raw, bool) else frozenset(str(t) for t in per_tenant_raw)
        )
        try:
            rules = tuple(Rule.from_mapping(r) for r in rules_doc.get("rules") or [])
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{paths['rules']}: {exc}") from exc
        shadow = policy_doc.get("shadow")
        if shadow is not None:
            if (
                not isinstance(shadow, Mapping)
                or not isinstance(shadow.get("name"), str)
                or not shadow["name"]
            ):
                raise ConfigError(
                    f"{paths['policy']}: shadow must be a mapping with a name and policy overrides"
                )
            try:
                TaskPolicy.from_mapping({**defaults, **{k: v for k, v in shadow.items() if k != "name"}})
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{paths['policy']}: shadow: {exc}") from exc
        try:
            limits = Limits.from_mapping(policy_doc.get("limits"))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{paths['policy']}: {exc}") from exc
        strength = _pooling_strength(paths["policy"], policy_doc.get("pooling"))
        split = _budget_split(paths["policy"], policy_doc.get("budget_split"))
        return cls(
            models,
            defaults,
            task_policies,
            default_join,
            task_joins,
            rules,
            per_tenant,
            shadow=shadow,
            limits=limits,
            version=version,
            pooled_prior_strength=strength,
            budget_split=split,
        )


CONFIG_KEY = b"config"
"""The one key of the config topic: compaction keeps the newest document."""
MAX_DOCUMENT_BYTES = 1_000_000


def config_document(texts: Mapping[str, str], version: int, pushed_by: str, pushed_at: str) -> bytes:
    """The config topic's value: the three YAML texts as one versioned JSON document."""
    unknown = set(texts) - set(CONFIG_FILES)
    if unknown:
        raise ConfigError(f"unknown configuration files {sorted(unknown)}; known: {list(CONFIG_FILES)}")
    doc = {
        "schema_version": 1,
        "version": version,
        "files": {f"{n}.yaml": texts.get(n, "") for n in CONFIG_FILES},
        "pushed_by": pushed_by,
        "pushed_at": pushed_at,
    }
    raw = orjson.dumps(doc)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ConfigError(
            f"the configuration is {len(raw)} bytes; at most {MAX_DOCUMENT_BYTES} fit the topic"
        )
    return raw


def read_document(raw: bytes) -> tuple[dict[str, Any], RouterConfig]:
    """The document of a config-topic record and the configuration it holds (ConfigError when invalid)."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"config document of {len(raw)} bytes (at most {MAX_DOCUMENT_BYTES})")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"config document is not JSON: {exc}") from exc
    files = doc.get("files") if isinstance(doc, dict) else None
    version = doc.get("version") if isinstance(doc, dict) else None
    if (
        not isinstance(files, dict)
        or not isinstance(version, int)
        or isinstance(version, bool)
        or version < 1
    ):
        raise ConfigError("config document needs files {name.yaml: text} and an integer version >= 1")
    texts = {n: files.get(f"{n}.yaml") or "" for n in CONFIG_FILES}
    if not all(isinstance(t, str) for t in texts.values()):
        raise ConfigError("config document: every file must be a YAML text")
    where = {n: f"config topic v{version}: {n}.yaml" for n in CONFIG_FILES}
    return doc, RouterConfig.parse(texts, where, f"config-v{version}")


def _as_dict(policy: JoinPolicy) -> dict[str, Any]:
    return {
        "wait_s": policy.wait_s,
        "on_timeout": policy.on_timeout,
        "default_reward": policy.default_reward,
        "learn_late": policy.learn_late,
        "keep_joined_s": policy.keep_joined_s,
    }


class Registry:
    """The current :class:`~banditroute.routing.RoutingSnapshot`, rebuilt from config and catalog events.

    Everything that changes it (a reload, a catalog event) runs on the worker's event loop and ends with one
    assignment of ``snapshot``; readers on other threads take that reference once and read only from it.
    """

    def __init__(self, config: RouterConfig, config_dir: Path | None = None) -> None:
        self.config_dir = config_dir
        self.config = config
        self._catalog: dict[str, ModelSpec] = {}
        self._retired: set[str] = set()
        self.snapshot = self._build(1)

    # -- building -----------------------------------------------------------------------------------------
    def _build(self, version: int) -> RoutingSnapshot:
        config = self.config
        merged: dict[str, ModelSpec] = {m.name: m for m in config.models}
        merged.update(self._catalog)
        for name in self._retired:
            if name in merged:
                merged[name] = replace(merged[name], lifecycle="retired")
        return RoutingSnapshot.build(
            version,
            tuple(merged.values()),
            config.default_policy,
            config.task_policies,
            config.default_join,
            config.task_joins,
            config.rules,
            config.per_tenant,
            config.shadow,
            config.limits,
            config.version,
            config.pooled_prior_strength,
            config.budget_split,
        )

    def _swap(self) -> None:
        self.snapshot = self._build(self.snapshot.version + 1)

    def apply_config(self, config: RouterConfig) -> None:
        """Use ``config`` (catalog events applied so far stay applied on top of it)."""
        self.config = config
        self._swap()

    def apply_document(self, raw: bytes) -> int:
        """Use the configuration of a config-topic record, like a file edit; from then on the folder is not
        watched (the topic wins). Returns its version; raises ConfigError (the current one stays)."""
        doc, config = read_document(raw)
        self.apply_config(config)
        self.config_dir = None
        return int(doc["version"])

    def reload_if_changed(self) -> bool:
        """Reload ``config/`` when one of its files changed on disk; returns whether it did."""
        if self.config_dir is None:
            return False
        paths = [self.config_dir / f"{n}.yaml" for n in ("models", "policy", "rules")]
        now = {str(p): p.stat().st_mtime for p in paths if p.exists()}
        if now == dict(self.config.sources):
            return False
        self.apply_config(RouterConfig.load(self.config_dir))
        return True

    def apply_catalog(self, event: Mapping[str, Any]) -> None:
        """Apply a catalog event (a decoded ``ModelCatalogEvent`` as a dict)."""
        name = str(event["model"])
        if event["action"] == "retired":
            self._retired.add(name)
        else:
            self._retired.discard(name)
            base = self._catalog.get(name) or next((m for m in self.config.models if m.name == name), None)
            prior = event.get("quality_prior")
            price_in = float(event.get("price_in_per_1k_usd") or 0.0)
            price_out = float(event.get("price_out_per_1k_usd") or 0.0)
            cost = event.get("cost_per_call_usd")
            if cost is None:
                cost = base.cost_per_call_usd if base else (price_in + price_out) * 0.5
            self._catalog[name] = ModelSpec(
                name=name,
                cost_per_call_usd=float(cost),
                latency_ms=float(event.get("latency_ms") or (base.latency_ms if base else 1000.0)),
                price_in_per_1k_usd=price_in,
                price_out_per_1k_usd=price_out,
                capabilities=frozenset(event.get("capabilities") or ()),
                context_window=event.get("context_window"),
                lifecycle=str(event.get("lifecycle") or "active"),
                enabled=bool(event.get("enabled", True)),
                quality_prior=(float(prior[0]), float(prior[1]))
                if prior
                else (base.quality_prior if base else (1.0, 1.0)),
                rate_limit_rps=event.get("rate_limit_rps"),
                tokens_per_minute=event.get("tokens_per_minute"),
            )
        self._swap()

    # -- lookups on the current snapshot (each call reads it afresh: take ``snapshot`` once to read several) --
    @property
    def version(self) -> int:
        return self.snapshot.version

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        return self.snapshot.models

    @property
    def model_names(self) -> frozenset[str]:
        return self.snapshot.model_names

    def policy(self, task_type: str) -> TaskPolicy:
        return self.snapshot.route(task_type).policy

    def shadow_policy(self, task_type: str) -> tuple[str, TaskPolicy] | None:
        """The shadow candidate for ``task_type``: its name and the task's policy with the shadow's overrides."""
        return self.snapshot.route(task_type).shadow

    def join_policy(self, task_type: str) -> JoinPolicy:
        return self.snapshot.route(task_type).join

    def state_key(self, tenant: str | None, task_type: str) -> str:
        """Key of the bandit state a request uses: the task type, or tenant|task type where configured."""
        return self.snapshot.state_key(tenant, task_type)

    @staticmethod
    def task_type_of(key: str) -> str:
        return task_type_of(key)

    def initial_state(self, task_type: str) -> TaskState:
        """The prior state of a task type nobody has learnt about yet."""
        return self.snapshot.initial

    def aligned(self, state: TaskState, task_type: str) -> TaskState:
        """``state`` with the current model list (new models get their priors; retired ones keep state)."""
        return self.snapshot.aligned(state)

    def rules(self) -> Sequence[Rule]:
        return self.snapshot.rules


__all__ = [
    "BUDGET_SPLITS",
    "CONFIG_FILES",
    "CONFIG_KEY",
    "TENANT_SEPARATOR",
    "ConfigError",
    "Registry",
    "RouterConfig",
    "config_document",
    "files_version",
    "read_document",
]
