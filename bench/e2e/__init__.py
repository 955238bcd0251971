"""End to end, as a user runs it: files -> state database -> profiles -> the fake Mailchimp
(or the fake Klaviyo or HubSpot).

    python -m bench.e2e [--sizes 10000,100000] [--engines sqlite,postgresql]
                        [--latency 0.08] [--connections 10] [--keep]
                        [--work var/bench] [--source DIR]
                        [--workers 0,1,2] [--broker redis|amqp]
                        [--destination mailchimp|klaviyo|hubspot]

(``python -m bench.bench_e2e`` is the same command under its first name.)

``--sizes`` takes ``cdnow`` beside numbers: the CDNOW store (``bench.e2e.cdnow``: 23,570
customers of a real shop's purchases, without names, cities or carts), keyed
``<engine>.cdnow.…``; its 1 % change renames and moves or gives an order to 236 of them.

For each size and engine, ``crmsync run --config X --as-of T --json`` runs as a subprocess
three times against the fake Mailchimp (real HTTP on 127.0.0.1, ``latency`` seconds per
call, at most ``connections`` requests in flight, spec validation off for speed): the
first sync, a run with nothing changed, and a run after 1 % of the customers changed in
the export files (half of them renamed and moved to another city, half with a new order,
all stamped after the first run's data). Every run uses the same ``--as-of`` (an hour
after the store's clock), so profiles never drift with the calendar and the third run
changes exactly the people edited.

Per run it writes the wall time, the run report's seconds per stage, the staging rate
(records received / ``pull.stage`` seconds; ``pull_records_per_s`` divides by the pull's
wall time, ``pull``, in which reading overlaps staging when it runs in a child), the CPU
of the run's process tree, the peak RSS of its processes (the maximum over the tree
from /usr/bin/time; per process sampled from ``/proc``), the CPU
this process spent meanwhile (mostly the fake), on PostgreSQL the server's CPU for the
run's database (sampled), and the Mailchimp calls by kind against the floor.

The floor is computed from what the fake's audience shows changed: ⌈members
upserted/500⌉ plus, per tag, max(⌈adds/500⌉, ⌈removes/500⌉) membership calls, where a tag
created in the run carries its first 500 members, plus one call per archived member;
tag creation, merge-field set-up and reads are one-time calls reported apart (the same
floor as ``bench.bench_mailchimp``'s, which computes it). The time floor is floor calls ×
latency / connections. At 10,000 customers the same audience is also pushed per contact
(one member PUT and one tags POST per person, with httpx at the same connection cap) for
the ratio of calls and time.

Sample stores (5 orders a customer, 1 % dirty rows, seed 7) are generated once per size
and cached under ``var/bench/stores`` (a million customers takes minutes); each run works
on a copy in ``var/bench/e2e`` (``--keep`` keeps it, with each run's JSON and log).
``--source DIR`` runs crmsync from another tree, e.g. ``git archive <commit> | tar -x -C
DIR``, for a before/after on the same stores. A PostgreSQL run uses a database of its
own (``CREATE DATABASE``, dropped afterwards) on the server of
``CRMSYNC_TEST_POSTGRES_URL`` (default 127.0.0.1:5432). Figures go to the results file
(``bench/results.py``) under "e2e", merged with earlier sizes, keyed
``<engine>.<size>.<run>.<figure>``; the targets sit beside them as met/missed, never
asserted. Beside them, ``python_speed_s``: the machine's speed at a fixed piece of
pure-Python work (``bench.results.python_speed``), for reading seconds measured on
different machines side by side. At a million customers the fake holds the whole audience in
this process: expect a few GB here, which is not crmsync's memory.

``--destination klaviyo`` or ``hubspot`` pushes the same runs to the fake Klaviyo or
HubSpot instead (``bench.e2e.vendors``), served from a child process, answering after
``latency`` seconds a call, with the vendor's published limits: Klaviyo's burst and steady
rate per endpoint as the fake enforces them, HubSpot's 100 calls in any 10 seconds (Free
and Starter). crmsync has ``connections`` requests in flight at most (its
``http.rate.max_concurrency``). The calls by kind are counted against the floor of the
vendor's bench (``bench.bench_klaviyo``, ``bench.bench_hubspot``) for what the fake shows
changed, and the time floor is the least time the limits allow for the run's calls
(HubSpot: (⌈calls/100⌉ - 1) x 10 s); before the second and third runs the bench waits
until the earlier calls left the vendor's windows, so each run meets the limits afresh,
and at Klaviyo every run, the first too, starts where one of its minutes begins (where
in a minute a run's calls fell moved its end by up to a minute).
Every run must leave every consented customer subscribed (Klaviyo) or present and not
opted out (HubSpot), and nothing the vendor refuses, or the bench stops. Keys:
``<engine>.<size>.<destination>.<run>.<figure>``, ``…<destination>.w<N>.…`` on workers,
with ``fake_cpu_s`` (the fake's process) and ``vendor_limits``. The per-contact baseline
is Mailchimp's only.

``--workers 0,1,2`` (PostgreSQL only) measures the same store in one process (0, the keys
above) and on N Celery workers started here for each N > 0, keyed
``<engine>.<size>.w<N>.<run>.<figure>``: the coordinator's and the workers' CPU and peak
RSS, the fake's peak requests in flight, and ``throughput_over_w1`` (with ``_pull`` and
``_plan_push``: the same of those phases). Every run must end with
the first configuration's audience at the fake, or the bench stops (docs/scale.md,
"Benchmark across workers"). The workers share the account's rate budget in Redis: the
Mailchimp destination's own ``http.rate.shared``, for Klaviyo and HubSpot ``[celery]
shared_budget``.

Where a run's vendor time goes: with ``CRMSYNC_BENCH_TIMELINE=DIR`` the fake Klaviyo or
HubSpot writes each run's calls to ``DIR/calls-N.csv`` (N counts the runs), one line a
call: the seconds from the run's start to the call's, the method, the path and the status.

The modules, in the order a run uses them: ``options`` (what a bench run is asked for),
``store`` (the sample store and its 1 % change), ``config`` (the state database and the
user's configuration), ``run`` and ``watch`` (one ``crmsync run`` and its process tree),
``workers`` (the Celery workers, their configuration and their share of a run),
``fake`` (the fake Mailchimp's audience, call names and the floor), ``vendors`` (the
destination: Mailchimp, or Klaviyo and HubSpot served from a child process, with their
floors), ``per_contact`` (the naive method), ``measure`` (the three runs of one size on
one engine), ``figures`` (figures and targets), ``output`` (the results file and the
table), ``cli``.
"""
