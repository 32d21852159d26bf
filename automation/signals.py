"""In-process domain signals of automation runs, for code that wants to react to a run's end
(``automation/completed``, ``automation/failed`` in the original system). Sent after the commit that
ended the run, with ``run`` (an ``AutomationRun``); a receiver's error is logged, never raised."""

from django.dispatch import Signal

automation_completed = Signal()  # the run ended completed or partial
automation_failed = Signal()  # the run ended failed
