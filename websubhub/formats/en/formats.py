"""One time format everywhere (admin lists, change pages, attempt logs): ISO-like, with seconds.

Django's English formats show "Nov. 30, 2026, 5:07 p.m.", so three attempts a
few seconds apart read the same and the backoff cannot be seen.
"""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
