"""Whether the Ray cluster can ever run what a sweep asks for, checked before anything waits.

A trial asking for `resources.gpu: 1` on a cluster with no GPU, or a comparison actor asking
for more CPUs than any node has, would wait in Ray's queue forever with a progress bar at 0%.
Without an autoscaler that could add such a node, that is an error (one line: what is asked,
what the largest node has); with one, it is a wait, and the user is told what for.
"""

from __future__ import annotations

from repsweep.orchestrator.spec import SpecError, SweepSpec


def _nodes() -> list[dict[str, float]]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def _has_autoscaler() -> bool:
    """Whether an autoscaler that can add nodes runs on this cluster.

    Every Ray head runs a monitor that reports to the GCS; without an autoscaling config it
    uses a read-only provider that names each node's type after the node ("node_<id>"). An
    autoscaler of a cluster launcher config (cluster.yaml) names the types it launches.
    """
    import json

    from ray._private import ray_constants
    from ray.experimental import internal_kv

    try:
        status = json.loads(internal_kv._internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS) or b"{}")
    except Exception:  # noqa: BLE001 - no status (an older or client connection): assume none
        return False
    types = (status.get("autoscaler_report") or {}).get("node_type_mapping") or {}
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
