"""The Branches screen: the run branches on the head (what ``tether branches`` lists), newest
commit first, and under them the highlighted branch's stage commits; Enter fetches it.

A branch's stage commits are the commits only it has (``git log B --not`` every other
branch: the snapshot and one commit per stage, newest first), read on the head over the
command channel; when it has none of its own (merged, or a clean snapshot of a run that
committed nothing yet), its last commits. Fetching is ``HeadRepo.fetch`` (fast-forward only;
refused while the branch is checked out here), and for the embedded ``local`` profile a
no-op: the head's repository is this one.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..branches import BranchInfo, local_branch, validate_branch

COMMITS_MAX = 30


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    time: float
    subject: str


def stage_commits(head, branch: str, *, limit: int = COMMITS_MAX) -> list[CommitInfo]:
    """The commits only ``branch`` has on the head (else its last ones), newest first."""
    validate_branch(branch)
    ref = f"refs/heads/{branch}"
    fmt = "--format=%h%x00%ct%x00%s"
    base = ["git", "-C", head.repo.repo_path, "log", fmt, f"-n{limit}", ref]
    own = [*base, "--not", f"--exclude={branch}", "--branches"]  # --branches: no refs/heads/
    for argv in (own, base):
        res = head.remote.run(shlex.join(argv), timeout=60, check=False)
        if not res.ok:
            from ..errors import TetherError

            raise TetherError(
                f"cannot read the commits of {branch} on {head.remote.name}: "
                f"{((res.stderr or res.stdout).strip().splitlines() or ['git failed'])[-1]}",
                hint="`tether branches` lists the run branches; `tether doctor` checks the head",
            )
        commits = []
        for line in res.stdout.splitlines():
            parts = line.split("\0")
            if len(parts) == 3 and parts[1].isdigit():
                commits.append(CommitInfo(sha=parts[0], time=float(parts[1]), subject=parts[2]))
        if commits:
            return commits
    return []


def fetch_branch(head, branch: str) -> str:
    """Bring ``branch`` from the head into the laptop repo; a line saying what happened."""
    if head.is_local:
        commit = local_branch(repo=head.laptop_repo, branch=branch)
        return f"{branch} is at {(commit or '?')[:10]} in this repository already: git log {branch}"
    commit = head.repo.fetch(repo=head.laptop_repo, branch=branch)
    return f"fetched {branch} at {commit[:10]}: git log {branch}"


class BranchesScreen(Screen):
    DEFAULT_CSS = """
    BranchesScreen #title { height: 1; padding: 0 1; background: $panel; text-style: bold; }
    BranchesScreen #status { height: 1; padding: 0 1; color: $text-muted; }
    BranchesScreen #branches { height: 1fr; }
    BranchesScreen #commits-title { height: 1; padding: 0 1; background: $panel; }
    BranchesScreen #commits { height: 12; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.back", "back"),
        Binding("enter", "fetch", "fetch", show=True),
        Binding("r", "refresh", "refresh"),
    ]

    class Listed(Message):
        def __init__(self, branches: list[BranchInfo] | None, error: str | None) -> None:
            super().__init__()
            self.branches = branches
            self.error = error

    class Commits(Message):
        def __init__(self, branch: str, commits: list[CommitInfo], error: str | None) -> None:
            super().__init__()
            self.branch = branch
            self.commits = commits
            self.error = error

    def __init__(self) -> None:
        super().__init__()
        self.branches: list[BranchInfo] = []
        self.commits: dict[str, list[CommitInfo]] = {}

    def compose(self) -> ComposeResult:
        yield Static("tether watch: run branches", id="title", markup=False)
        yield Static("listing the head's run branches…", id="status", markup=False)
        table: DataTable = DataTable(id="branches", cursor_type="row", zebra_stripes=True)
        for name in ("branch", "commit", "last commit", "date"):
            table.add_column(name, key=name)
        yield table
        yield Static("stage commits", id="commits-title", markup=False)
        commits: DataTable = DataTable(id="commits", cursor_type="none", zebra_stripes=True)
        for name in ("commit", "date", "message"):
            commits.add_column(name, key=name)
        yield commits
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#branches", DataTable).focus()
        self.action_refresh()

    def action_refresh(self) -> None:
        self._list()

    def _error(self, what: str, exc: Exception) -> str:
        from ..errors import TetherError, from_library_error

        error = exc if isinstance(exc, TetherError) else from_library_error(exc)
        if error is None:
            return f"{what}: {type(exc).__name__}: {exc}"
        return f"{what}: {error.message}" + (f" ({error.hint})" if error.hint else "")

    @work(thread=True, exclusive=True, group="branches")
    def _list(self) -> None:
        head = self.app.head
        if head is None:
            self.post_message(self.Listed(None, self.app.no_head_reason()))
            return
        try:
            branches = head.repo.branches() if head.repo.exists() else []
        except Exception as exc:
            self.post_message(self.Listed(None, self._error("cannot list the branches", exc)))
            return
        self.post_message(self.Listed(branches, None))

    def on_branches_screen_listed(self, message: Listed) -> None:
        status = self.query_one("#status", Static)
        if message.error is not None:
            status.update(Text(message.error))
            return
        self.branches = message.branches or []
        where = self.app.head.remote.name if self.app.head else "the head"
        note = "enter fetches the highlighted branch" if self.branches else "none yet"
        status.update(Text(f"{len(self.branches)} run branches on {where}  ·  {note}"))
        table = self.query_one("#branches", DataTable)
        table.clear()
        for b in self.branches:
            table.add_row(
                b.name, b.commit[:10], b.subject, b.date.astimezone().strftime("%m-%d %H:%M"),
                key=b.name,
            )  # fmt: skip

    def highlighted(self) -> str | None:
        table = self.query_one("#branches", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "branches" and event.row_key.value:
            branch = event.row_key.value
            if branch in self.commits:
                self._show_commits(branch, self.commits[branch], None)
            else:
                self._load_commits(branch)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_fetch()

    @work(thread=True, exclusive=True, group="commits")
    def _load_commits(self, branch: str) -> None:
        try:
            commits = stage_commits(self.app.head, branch)
        except Exception as exc:
            self.post_message(self.Commits(branch, [], self._error("cannot read commits", exc)))
            return
        self.post_message(self.Commits(branch, commits, None))

    def on_branches_screen_commits(self, message: Commits) -> None:
        if message.error is None:
            self.commits[message.branch] = message.commits
        if message.branch == self.highlighted():
            self._show_commits(message.branch, message.commits, message.error)

    def _show_commits(self, branch: str, commits: list[CommitInfo], error: str | None) -> None:
        import time

        title = f"stage commits of {branch}" if error is None else error
        self.query_one("#commits-title", Static).update(Text(title))
        table = self.query_one("#commits", DataTable)
        table.clear()
        for c in commits:
            when = time.strftime("%m-%d %H:%M", time.localtime(c.time))
            table.add_row(c.sha, when, c.subject)

    def action_fetch(self) -> None:
        branch = self.highlighted()
        if branch is None:
            self.notify("no branch is highlighted", severity="warning")
            return
        self._fetch(branch)

    @work(thread=True, group="fetch")
    def _fetch(self, branch: str) -> None:
        try:
            line = fetch_branch(self.app.head, branch)
        except Exception as exc:
            self.app.call_from_thread(
                self.notify, self._error(f"fetching {branch} failed", exc), severity="error"
            )
            return
        self.app.call_from_thread(self.notify, line)
