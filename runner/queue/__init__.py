"""The job queue: coordinator (HTTP API over the job store) and executor daemons.

Modules follow the flow of a job:

- ``bundle``: a spec and the files its ``mount`` entries name, with content hashes;
- ``jobs``: a job's payload (workspace, clone URL, env plan as provenance only);
- ``models``, ``schema``, ``store``: the job store (SQLite and PostgreSQL, the same SQL);
- ``states``: the job state machine, pure functions both job stores decide by;
- ``tokens``: API tokens, stored as hashes;
- ``service``: the coordinator's rules (permissions, submit checks, claim-time decryption);
- ``api``: the FastAPI application over the service; ``server``: uvicorn, TLS, the resetter;
- ``client``: the httpx client for executors and the CLI's remote mode;
- ``executor``: the daemon that claims jobs and runs them with the local engine.

Imports stay lazy here so that the CLI does not load FastAPI to print help.
"""
