"""deployer: deployment and rollback orchestrator for web apps on SSH fleets."""

__version__ = "0.2.0"

#: the name pip knows deployer by (`pip install rollback-deployer`); PyPI's `deployer` is another
#: project: `pip install -U deployer` would replace this one with it. The program and the import
#: package are `deployer`.
DISTRIBUTION = "rollback-deployer"
