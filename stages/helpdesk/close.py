"""Close the ticket and tell the requester."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    ctx.run["outcome"] = task["outcome"]
    ctx.log("ticket closed (%s): %s", task["outcome"], task["resolution"])
    if task.get("requester"):
        ctx.slack.dm(task["requester"], f":white_check_mark: Your ticket \"{task['summary']}\" is closed "
                                        f"({task['outcome']}): {task['resolution']}")
