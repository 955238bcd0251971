"""Connectors: the sources and destinations crmsync reads from and writes to.

Importing any of them first marks httpx's command-line client (``httpx._main``) absent.
httpx's package imports that client whenever its optional dependencies are installed,
and crmsync installs rich (for its progress display), so every process that loads a
connector paid for rich's console, pygments' lexers and the client itself: about half of
httpx's import, 40 ms a process on a 2-core machine, in every run, reader process and
worker. crmsync never runs httpx's command line, and httpx has its own fallback for an
install without its ``cli`` extra, which is what it then takes. A process that imported
httpx before any connector keeps the client it has.
"""

from crmsync.deferred import absent

absent("httpx._main")
