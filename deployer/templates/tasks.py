"""Invoke tasks of <<app>> (written by `deployer init`): `inv --list`, `inv deploy --env <<env>>`.

Every deployer verb is a task here, with the same options and exit codes as `deployer VERB`
(`inv deploy --help`). Add your own tasks to the same collection, for example:

    from invoke import task

    @task
    def smoke(c):
        c.run("curl -fsS https://example.com/up")

    ns.add_task(smoke)

More: `deployer docs cli`.
"""

from deployer.tasks import ns  # noqa: F401 - Invoke runs the tasks of `ns`
