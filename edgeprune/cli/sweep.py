"""`edgeprune sweep SWEEP.yaml -o DIR`: every config on Ray, a live progress line, results.jsonl and report.html."""
from __future__ import annotations

import time

import click

from edgeprune.cli.common import console, err_console


class SweepProgress:
    """done / running / failed counts and an ETA (from the mean time per finished config) on one live line."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=err_console, transient=True)
        self.task, self.done, self.failed, self.running, self.t0 = None, 0, 0, 0, time.time()

    def __call__(self, event: dict) -> None:
        if "todo" in event:
            self.progress.start()
            self.task = self.progress.add_task("sweep", total=event["todo"])
            console.print(f"{event['total']} configs, {event['total'] - event['todo']} already done in this folder")
        self.running = event.get("running", self.running)
        if "done" in event or "failed" in event:
            self.done += "done" in event
            self.failed += "failed" in event
            self.running = max(0, self.running - 1)
            if "failed" in event:
                console.print(f"[red]failed[/red] {event['failed']}: {event['reason']}")
        if self.task is not None:
            self.progress.update(self.task, completed=self.done + self.failed,
                                 description=f"done {self.done}, running {self.running}, failed {self.failed}")

    def stop(self) -> None:
        self.progress.stop()


@click.command("sweep")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "outdir", default="sweep", show_default=True, type=click.Path(file_okay=False),
              help="Sweep folder: results.jsonl, report.html, configs/<hash>.json, runs/<hash>/. A re-run resumes it.")
@click.option("--address", help="Join a Ray cluster (ray://HOST:10001, HOST:6379 or auto) instead of an embedded local Ray.")
@click.option("--retries", type=click.IntRange(0, 10), default=1, show_default=True,
              help="Retries of a failed or killed task before its config is recorded as failed.")
@click.option("--retry-failed", is_flag=True, help="Run again the configs recorded as failed in the folder.")
def sweep_cmd(spec, outdir, address, retries, retry_failed):
    """Optimize every model x target x budget x precision of SPEC on Ray; the Pareto report lands in OUTDIR."""
    from edgeprune.sweeper import load_sweep, sweep

    parsed, base = load_sweep(spec)  # a bad file is refused before Ray starts
    progress = SweepProgress()
    try:
        rows = sweep(parsed, outdir, address=address, retries=retries, retry_failed=retry_failed, progress=progress,
                     base=base)
    finally:
        progress.stop()
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        s = r.get("speedup")
        speed = f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})" if s else "not measured"
        console.print(f"{r['model']} on {r['target']} {r['budget']} {r['precision']}: {speed}, "
                      f"{r['metric']} {r['score']:.2f}, {r['chosen_precision']}")
    console.print(f"{len(ok)} ok, {len(rows) - len(ok)} failed. Results: {outdir}/results.jsonl, {outdir}/report.html")


COMMANDS = [sweep_cmd]
