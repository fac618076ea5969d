"""The example project's settings for the schemathesis run (scripts/schemathesis).

Schemathesis signs in with HTTP Basic on every request; Django's default password
hasher (hundreds of thousands of PBKDF2 rounds by design) would make each request
cost a CPU-second, so the fuzzing run hashes with MD5 — as the test settings do.
"""

from example_project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
