"""Whether the Ray cluster can ever run what a sweep asks for, checked before anything waits.

A trial asking for `resources.gpu: 1` on a cluster with no GPU, or a comparison actor asking
for more CPUs than any node has, would wait in Ray's queue forever with a progress bar at 0%.
Without an autoscaler that could add such a node, that is an error (one line: what is asked,
what the largest node has); with one, it is a wait, and the user is told what for.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from repsweep.orchestrator.spec import SpecError, SweepSpec

REPORT_WAIT_S = 30.0  # the longest a driver waits for a just-started head's first autoscaler report


def _nodes() -> list[dict[str, float]]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def _autoscaler_report(wait_s: float, say: Callable[[str], None]) -> dict:
    """The cluster monitor's latest report from the GCS ({} where it has none).

    A head's monitor writes its status within a second of starting, but the report on its
    node types only after its first autoscaler update, seconds later (measured: 1.6 s with a
    cluster launcher config, 3.4 s without). A driver that connects in between waits for it,
    up to `wait_s` seconds, rather than take "not yet" for "never".
    """
    import json

    from ray._private import ray_constants
    from ray.experimental import internal_kv

    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            raw = internal_kv._internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        except Exception:  # noqa: BLE001 - no status (an older or client connection): assume none
            return {}
        report = (json.loads(raw) if raw else {}).get("autoscaler_report")
        if report:
            return report
        if time.monotonic() >= deadline:
            if said:
                say(f"the cluster's autoscaler did not report in {wait_s:.0f} s: taking it that there is none")
            return {}
        if not said:
            say(f"waiting up to {wait_s:.0f} s for the cluster's autoscaler to report which nodes it can add "
                f"(the head started moments ago)")
            said = True
        time.sleep(0.2)


def _has_autoscaler(wait_s: float = REPORT_WAIT_S, say: Callable[[str], None] = print) -> bool:
    """Whether an autoscaler that can add nodes runs on this cluster.

    Every Ray head runs a monitor that reports to the GCS; without an autoscaling config it
    uses a read-only provider that names each node's type after the node ("node_<id>"). An
    autoscaler of a cluster launcher config (cluster.yaml) names the types it launches.
    Autoscaler v2 writes no such report: there, as before, none is assumed.
    """
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    try:
        if is_autoscaler_v2(fetch_from_server=True):
            return False
    except Exception:  # noqa: BLE001 - no GCS client (a client connection): no report to read either
        return False
    types = _autoscaler_report(wait_s, say).get("node_type_mapping") or {}
    return any(kind != f"node_{node}" for node, kind in types.items())


def unmet(spec: SweepSpec, nodes: list[dict[str, float]], *, train: bool) -> list[str]:
    """What no node can give: one phrase per unmet request (empty if every request fits a node)."""
    asks = [("compare", spec.compare.cpu, spec.compare.gpu, "a comparison actor")]
    if train:
        asks.insert(0, ("resources", spec.resources.cpu, spec.resources.gpu, "a trial"))
    out = []
    for section, cpu, gpu, what in asks:
        if not any(n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu for n in nodes):
            cpus = max((n.get("CPU", 0) for n in nodes), default=0)
            gpus = max((n.get("GPU", 0) for n in nodes), default=0)
            out.append(f"{what} asks for {cpu:g} CPU and {gpu:g} GPU ({section}.cpu, {section}.gpu) but the largest "
                       f"node has {cpus:g} CPU and {gpus:g} GPU")
    return out


def check_resources(spec: SweepSpec, *, train: bool = True, embedded: bool = False) -> str | None:
    """Fail at once (SpecError) if no node can ever run a trial or a comparison actor. With an
    autoscaler, return what the sweep will wait for instead (None when everything fits now).
    `embedded`: Ray was started by this process, so no autoscaler can add a node."""
    problems = unmet(spec, _nodes(), train=train)
    if not problems:
        return None
    if not embedded and _has_autoscaler():
        return f"waiting for the autoscaler to add a node: {'; '.join(problems)}"
    raise SpecError(f"{problems[0]}, and no autoscaler can add one; lower the request or run on a cluster "
                    f"that has such nodes (--address)")
