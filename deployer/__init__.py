"""deployer: deployment and rollback orchestrator for web apps on SSH fleets."""

__version__ = "0.1.0"
