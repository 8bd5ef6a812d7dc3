"""Serve every vozvrat deployment from this process (`make up`; no work pool needed).

The deployments are declared once, in prefect.yaml (workers on several machines take them with
`prefect deploy --all`); this reads the same list, so the two can never disagree. An interval can be
overridden for one process with VOZVRAT_<DEPLOYMENT>_INTERVAL_S (e.g. VOZVRAT_SLA_WATCH_INTERVAL_S).

Runs served here, like runs on a worker, take their settings from the environment of the process
that starts them, never from values captured when the deployments were declared: a prefect.yaml
that templates an environment variable (`{{ $VAR }}`) anywhere but in a pull step (resolved on the
worker at run time) is refused (`captured_environment`).
"""
from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from prefect import serve

from models.crypto import require_secret_key

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str  # "flows/sla_watch.py:sla_watch"
    description: str
    tags: tuple[str, ...]
    interval: int | None  # seconds; None: runs only when asked (refund-claim, by the run starter)

    def flow(self):
        path, attribute = self.entrypoint.split(":")
        return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attribute)


_ENV_TEMPLATE = re.compile(r"\{\{\s*\$")


def captured_environment(config: dict) -> list[str]:
    """Where prefect.yaml would freeze the deployer's environment into deployments: every
    `{{ $VAR }}` outside the pull steps (those are resolved on the worker when a run starts)."""
    found: list[str] = []

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        elif isinstance(node, str) and _ENV_TEMPLATE.search(node):
            found.append(f"{where}: {node}")

    for key, value in config.items():
        if key != "pull":
            walk(value, key)
    for i, item in enumerate(config.get("deployments") or []):
        if "pull" in item:
            found = [f for f in found if not f.startswith(f"deployments[{i}].pull")]
    return found


def declared_deployments(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    """The deployments as prefect.yaml declares them (one interval schedule at most per deployment)."""
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if captured := captured_environment(config):
        raise ValueError(f"{path.name} captures the deployer's environment (workers must use their own): {'; '.join(captured)}")
    specs = []
    for item in config["deployments"]:
        schedules = item.get("schedules") or []
        if len(schedules) > 1 or any(set(s) != {"interval"} for s in schedules):
            raise ValueError(f"{item['name']}: flows/serve.py serves one interval schedule per deployment")
        specs.append(DeploymentSpec(
            name=item["name"], entrypoint=item["entrypoint"], description=item.get("description", ""),
            tags=tuple(item.get("tags") or ()), interval=int(schedules[0]["interval"]) if schedules else None,
        ))
    return specs


def _interval(spec: DeploymentSpec) -> int | None:
    override = os.environ.get(f"VOZVRAT_{spec.name.upper().replace('-', '_')}_INTERVAL_S")
    return int(override) if override and spec.interval is not None else spec.interval


def deployments() -> list:
    return [
        spec.flow().to_deployment(name=spec.name, interval=_interval(spec), tags=list(spec.tags), description=spec.description)
        for spec in declared_deployments()
    ]


def main() -> None:
    require_secret_key("flows.serve")
    serve(*deployments(), limit=int(os.environ.get("VOZVRAT_RUN_LIMIT", "4")))


if __name__ == "__main__":
    main()
