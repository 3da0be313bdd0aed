"""invoke entry point: one Collection per concern; the work lives in the harness package."""

from invoke import Collection

from harness.tasks import engine, faults, fuzz, hosts, patches, testbed

ns = Collection()
ns.add_task(hosts.build)
ns.add_task(hosts.deploy)
ns.add_task(engine.migrate)
ns.add_task(engine.resolve)
ns.add_task(engine.bench)
ns.add_task(fuzz.fuzz)
ns.add_task(faults.faults)
ns.add_collection(testbed.ns)
ns.add_collection(patches.ns)
