"""The Cluster screen: the nodes of the profile's Ray cluster, CPUs and GPUs in use of their
total, the demand Ray cannot place yet, and what it costs.

Read from the cluster's own dashboard through the head's Jobs client (``Head.jobs()``: the
SSH tunnel to the dashboard port, or the local cluster directly), every few seconds in a
thread worker: Ray's state API (``/api/v0/nodes``: each node's id, address, state, whether it
is the head) and the autoscaler's report (``/api/cluster_status``: resources used/total per
node and for the cluster, the pending resource demand and pending nodes), so nothing here
counts anything Ray already counts.

Cost: from a price table when ``tether.toml`` has one; none exists yet (the cost rules come
with a later issue), so the screen says ``no prices configured``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

REFRESH_S = 5.0
GIB = 1024**3


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str
    state: str
    is_head: bool
    cpus: tuple[float, float] | None = None  # (in use, total)
    gpus: tuple[float, float] | None = None
    memory: tuple[float, float] | None = None  # bytes


@dataclass(frozen=True)
class ClusterInfo:
    dashboard: str
    nodes: list[NodeInfo] = field(default_factory=list)
    cpus: tuple[float, float] | None = None
    gpus: tuple[float, float] | None = None
    demand: list[str] = field(default_factory=list)  # "2x {GPU: 3, CPU: 1}"
    pending_nodes: int = 0
    failed_nodes: int = 0


def _pair(usage: dict, key: str) -> tuple[float, float] | None:
    value = usage.get(key)
    if isinstance(value, list) and len(value) == 2:
        return float(value[0]), float(value[1])
    return None


def _get(jobs, path: str) -> dict[str, Any]:
    """GET a dashboard endpoint with the Jobs client's address and token; its ``data``."""
    import requests

    from ..errors import ClusterError

    token = getattr(jobs, "_token", None)  # JobsClient keeps it out of reprs; see report
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        res = requests.get(jobs.address + path, headers=headers, timeout=jobs.timeout_s)
        res.raise_for_status()
        body = res.json()
    except (requests.RequestException, ValueError) as exc:
        raise ClusterError(
            f"the Ray dashboard at {jobs.address} did not answer {path}: {exc}",
            hint="is the cluster up? `tether cluster status` shows it",
        ) from None
    return body.get("data") or {}


def read_cluster(jobs) -> ClusterInfo:
    """Nodes, usage and demand of the cluster behind ``jobs`` (a JobsClient)."""
    nodes_data = _get(jobs, "/api/v0/nodes?limit=1000")
    status = _get(jobs, "/api/cluster_status").get("clusterStatus") or {}
    report = status.get("loadMetricsReport") or {}
    by_node = report.get("usageByNode") or {}
    auto = status.get("autoscalerReport") or {}
    nodes = []
    for n in (nodes_data.get("result") or {}).get("result") or []:
        usage = by_node.get(n.get("node_id"), {})
        nodes.append(
            NodeInfo(
                node_id=str(n.get("node_id") or "")[:12],
                address=str(n.get("node_ip") or "?"),
                state=str(n.get("state") or "?"),
                is_head=bool(n.get("is_head_node")),
                cpus=_pair(usage, "CPU"),
                gpus=_pair(usage, "GPU"),
                memory=_pair(usage, "memory"),
            )
        )
    demand = []
    for item in report.get("resourceDemand") or []:
        if isinstance(item, list) and len(item) == 2 and isinstance(item[0], dict):
            shape = ", ".join(f"{k}: {v:g}" for k, v in sorted(item[0].items()))
            demand.append(f"{item[1]}x {{{shape}}}")
    usage = report.get("usage") or {}
    return ClusterInfo(
        dashboard=jobs.address,
        nodes=sorted(nodes, key=lambda n: (not n.is_head, n.address)),
        cpus=_pair(usage, "CPU"),
        gpus=_pair(usage, "GPU"),
        demand=demand,
        pending_nodes=len(auto.get("pendingNodes") or []),
        failed_nodes=len(auto.get("failedNodes") or []),
    )


def used(pair: tuple[float, float] | None, *, scale: float = 1.0, unit: str = "") -> str:
    """``in use/total``, e.g. ``1/2`` CPUs or ``0.5/19.5 GiB``; ``-`` when unknown."""
    if pair is None:
        return "-"
    a, b = pair[0] / scale, pair[1] / scale
    return f"{a:.3g}/{b:.3g}{unit}" if scale != 1.0 else f"{a:g}/{b:g}{unit}"


def cost_line(config) -> str:
    prices = getattr(config, "prices", None)  # a later issue adds the price table
    if not prices:
        return "cost: no prices configured (a price table in tether.toml comes with cost rules)"
    return f"cost: prices configured: {prices}"


class ClusterScreen(Screen):
    DEFAULT_CSS = """
    ClusterScreen #title { height: 1; padding: 0 1; background: $panel; text-style: bold; }
    ClusterScreen #summary { height: auto; padding: 0 1; }
    ClusterScreen DataTable { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.back", "back"),
        Binding("r", "refresh", "refresh"),
    ]

    class Loaded(Message):
        def __init__(self, info: ClusterInfo | None, error: str | None) -> None:
            super().__init__()
            self.info = info
            self.error = error

    def __init__(self) -> None:
        super().__init__()
        self.info: ClusterInfo | None = None
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("tether watch: cluster", id="title", markup=False)
        yield Static("reading the cluster…", id="summary", markup=False)
        table: DataTable = DataTable(id="nodes", cursor_type="row", zebra_stripes=True)
        for name in ("node", "address", "role", "state", "CPUs", "GPUs", "memory"):
            table.add_column(name, key=name)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.action_refresh()
        self.set_interval(REFRESH_S, self.action_refresh)

    def action_refresh(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="cluster")
    def _load(self) -> None:
        from ..errors import TetherError, from_library_error

        head = self.app.head
        if head is None:
            self.post_message(self.Loaded(None, self.app.no_head_reason()))
            return
        try:
            with head.jobs() as jobs:
                info = read_cluster(jobs)
        except Exception as exc:
            error = exc if isinstance(exc, TetherError) else from_library_error(exc)
            text = str(exc) if error is None else error.message
            hint = f" ({error.hint})" if error is not None and error.hint else ""
            self.post_message(self.Loaded(None, f"cannot read the cluster: {text}{hint}"))
            return
        self.post_message(self.Loaded(info, None))

    def on_cluster_screen_loaded(self, message: Loaded) -> None:
        self.info = message.info or self.info
        self.error = message.error
        self._show()

    def summary(self) -> str:
        info = self.info
        lines = []
        if info is not None:
            alive = sum(1 for n in info.nodes if n.state == "ALIVE")
            lines.append(
                f"{alive} nodes alive of {len(info.nodes)}  ·  CPUs {used(info.cpus)} in use"
                f"  ·  GPUs {used(info.gpus)} in use  ·  dashboard {info.dashboard}"
            )
            pending = ", ".join(info.demand) if info.demand else "none"
            nodes = f"  ·  nodes starting: {info.pending_nodes}" if info.pending_nodes else ""
            failed = f"  ·  failed nodes: {info.failed_nodes}" if info.failed_nodes else ""
            lines.append(f"pending demand: {pending}{nodes}{failed}")
        lines.append(cost_line(self.app.config))
        if self.error:
            lines.append(self.error + (" (showing the last reading)" if info else ""))
        return "\n".join(lines)

    def _show(self) -> None:
        self.query_one("#summary", Static).update(Text(self.summary()))
        table = self.query_one(DataTable)
        table.clear()
        for n in self.info.nodes if self.info else []:
            table.add_row(
                n.node_id, n.address, "head" if n.is_head else "worker",
                Text(n.state, style="bold #59a14f" if n.state == "ALIVE" else "bold #e15759"),
                used(n.cpus), used(n.gpus), used(n.memory, scale=GIB, unit=" GiB"),
            )  # fmt: skip
