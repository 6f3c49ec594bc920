"""`mgsv demo`: the whole pipeline offline on generated or Debian-packaged media (see `run`)."""
