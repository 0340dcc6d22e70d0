"""Scheduled jobs: fire times from ``engine.schedules``, fired once across every flowbot process.

Import the parts you need (``engine.jobs.scheduler``, ``engine.jobs.cli``); this package imports
nothing at load so the workflow loader can use its checks without pulling in the store.
"""
