"""The WSGI application (gunicorn ``config.wsgi``).

The URL conf (and every view, serializer and schema it imports) is loaded here rather than on the
first request, then ``gc.freeze()`` moves everything loaded so far out of the collector's reach: a
full collection no longer walks the whole framework, which was the 100–280 ms stall behind the
status endpoints' p99 (bench P4: job detail p99 16–18 ms with it, up to 277 ms without).
"""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from django.urls import get_resolver  # noqa: E402  (after the setup above)

get_resolver().url_patterns  # noqa: B018  (imports the URL conf now, before the freeze)
gc.freeze()
