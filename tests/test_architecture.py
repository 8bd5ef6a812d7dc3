"""The architecture stays visible: states decide, tasks act, flows orchestrate, models remember.

Read from the source (ast), not by importing, so a lazy import inside a function counts too: that is
where cycles used to hide (tasks/claims.py imported tasks/intake.py inside a task, and back).
"""
from __future__ import annotations

import ast
from pathlib import Path

from flows.serve import declared_deployments

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("states", "models", "tasks", "flows", "api", "cli", "standins")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in known and n not in PACKAGES}
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_not_even_inside_functions():
    """Used to go wrong: tasks.claims imported tasks.intake inside apply_input, tasks.intake imported tasks.claims."""
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


def test_the_cycle_check_can_fail():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_states_decide_without_io():
    """states/ is pure: it imports nothing from the layers that do I/O."""
    for name, deps in _graph().items():
        if name.startswith("states"):
            assert not [d for d in deps if not d.startswith("states")], name


def test_flows_only_orchestrate_prefect_tasks_live_in_tasks():
    for path in (ROOT / "flows").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef):
                decorators = [ast.unparse(d) for d in node.decorator_list]
                assert not any(d == "task" or d.startswith("task(") for d in decorators), f"{path.name}: @task {node.name}"


def test_deployments_are_declared_once_and_every_entrypoint_is_a_flow():
    """flows/serve.py serves exactly what prefect.yaml declares (it reads it); each entrypoint is a flow
    whose name is the deployment's flow, and the scheduled ones have an interval."""
    specs = {s.name: s for s in declared_deployments()}
    assert set(specs) == {"refund-claim", "sla-watch", "outbox-dispatch", "payout-run", "payout-reconcile", "escalation-alert",
                          "event-postponement", "mass-cancellation", "mass-cancellation-chunk", "bulk-decision"}
    for spec in specs.values():
        assert spec.flow().name == spec.name, spec
    assert specs["refund-claim"].interval is None  # created per claim by the run starter
    assert specs["bulk-decision"].interval is None  # run by staff from the Prefect UI, with parameters
    assert specs["mass-cancellation"].interval is None  # started per event (API, CLI, or a run scheduled in the UI)
    assert specs["outbox-dispatch"].interval is None  # created by the run starter only when mail was left behind
    assert all(specs[n].interval for n in ("sla-watch", "payout-run", "payout-reconcile"))


def test_prefect_yaml_freezes_nothing_of_the_deployers_environment():
    """Used to go wrong: job_variables.env copied VOZVRAT_DATABASE_URL ("" when unset, failing every run;
    the password in plain text) and PREFECT_LOCAL_STORAGE_PATH (results written into the checkout)."""
    import yaml

    from flows.serve import PREFECT_YAML, captured_environment

    config = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    assert captured_environment(config) == []
    for item in config["deployments"]:
        pool = item["work_pool"]
        assert pool["name"] == "vozvrat", item["name"]
        assert not (pool.get("job_variables") or {}).get("env"), item["name"]
    # The pull step is resolved on the worker when a run starts: each host's own checkout.
    assert config["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $VOZVRAT_HOME }}"}}]


def test_a_captured_variable_is_found_wherever_it_hides():
    from flows.serve import captured_environment

    config = {"pull": [{"step": {"directory": "{{ $VOZVRAT_HOME }}"}}],
              "definitions": {"work_pools": {"p": {"job_variables": {"env": {"URL": "{{$VOZVRAT_DATABASE_URL}}"}}}}},
              "deployments": [{"name": "d", "parameters": {"db": "{{ $DB }}"}, "pull": [{"s": {"d": "{{ $HOME }}"}}]}]}
    assert captured_environment(config) == ["definitions.work_pools.p.job_variables.env.URL: {{$VOZVRAT_DATABASE_URL}}",
                                            "deployments[0].parameters.db: {{ $DB }}"]
