"""invoke entry point: one Collection per concern; the work lives in the harness package."""

from invoke import Collection

from harness.tasks import engine

ns = Collection()
ns.add_task(engine.migrate)
ns.add_task(engine.bench)
