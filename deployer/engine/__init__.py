"""The engine: facts are read, a plan is built (a value), the executor runs it, a journal
records it. Front ends (cli, tasks, verbs) call the runs in deploy.py and rollback.py."""
