"""Every night: each new invoice from the supplier starts a run of invoice-processing.

``ctx.start`` starts the runs when the job's fire commits, through the same fan-out path as a
job's sends: thousands of invoices cost one short transaction per batch, not one each.
"""

from engine.triggers.jobs.context import JobContext

from .supplier import invoices_issued


def run(ctx: JobContext) -> None:
    invoices = invoices_issued(ctx.fire_time)
    for invoice in invoices:
        ctx.start("invoice-processing", invoice)
    ctx.log("%d invoice(s) issued before %s sent to invoice-processing", len(invoices), ctx.fire_time.isoformat())
