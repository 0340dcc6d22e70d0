"""Approved: grant the access (a real workflow would call the system's API) and say so."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    ctx.run["granted"] = {"system": task["system"], "level": task["level"]}
    ctx.log("granted %s access to %s", task["level"], task["system"])
    if task.get("requester"):
        ctx.slack.dm(task["requester"], f":unlock: You now have {task['level']} access to {task['system']}.")
