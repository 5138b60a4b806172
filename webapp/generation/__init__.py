"""The generation service: what a batch and its images go through, below every view and task.

    validation   the client's JSON → a checked spec, before any money moves (pure)
    creation     charge once, write the rows and the inputs, ring the doorbell
    claims       a pending image → processing, under a lease (one compare-and-set UPDATE)
    steps        the queue's tasks' steps: claim, ask the provider, record, say what to ring
    outcomes     what happened to an attempt, fenced on its lease; refunds of failures
    progress     counts by status (the one GROUP BY), a batch's final status, waiting for one
    cancellation cancel a batch and refund what had not started
    retry        a new batch of a finished batch's failed images
    reaper       recover what stalled, from the database alone, and run the sweeps
    ownership    the one query for "this user's batch"; callbacks: which image waits on a task
    idempotency_keys  how long an Idempotency-Key lives, and its sweep

Nothing here imports Flask's request, a template, a blueprint or the queue (`tasks`): the views
and the tasks call in, and the queue is handed to creation as its doorbell.

The transaction rule, for this package and everything that calls it: the function that opens a
unit of work commits it or rolls it back, and only that function. The helpers it calls inside
the unit (`billing.debit`, `billing.refund_generation`, `billing.grant`, the idempotency hook
`record_resource`, `fence` …) neither commit nor roll back; when they refuse, they raise, and
the opener rolls back. A function that only reads ends its read before it returns or waits, so
nothing holds a transaction (nor SQLite's lock) while a provider works. Views hold no
`rollback()`: they call one service function per unit of work, and Flask-SQLAlchemy ends the
request's session when the request ends.
"""
