"""Planning a job: from a caller's request and the seed's listing to the
:class:`~raydf.cluster.protocol.JobSpec` the scheduler runs.

Pure (no Ray, no I/O): the scheduler lists the repo through the job's seed
(the only holder of the caller's token), then calls :func:`plan_job`, which
cuts the files into tasks (one per distinct content) and lays them out
(``files``, or the Hugging Face cache layout with its ``refs`` and symlinks).
"""

from __future__ import annotations

from raydf.cluster.protocol import JobRequest, JobSpec
from raydf.cluster.spec import tasks_of
from raydf.layout import hf_cache_layout
from raydf.plan import RepoPlan

__all__ = ["plan_job"]


def plan_job(ask: JobRequest, plan: RepoPlan) -> JobSpec:
    """The job ``ask`` asks for, over the listing ``plan``."""
    request = ask.request
    tasks = tasks_of(plan)
    aux: list[tuple[str, str]] = []
    if request.layout == "hf-cache":
        revision = request.backend_options.revision or "main"
        tasks, aux = hf_cache_layout(plan, tasks, request.source, revision)
    return JobSpec(
        job_id=ask.job_id,
        plan=plan,
        tasks=tuple(tasks),
        dest=str(request.dest_dir) if ask.place else "",
        limits=ask.limits,
        memory_budget=ask.memory_budget,
        fingerprint=ask.fingerprint,
        aux=tuple(aux),
        caller=ask.caller,
        topology_label=ask.topology_label,
    )
