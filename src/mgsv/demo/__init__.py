"""`mgsv demo`: the whole pipeline offline on generated or Debian-packaged media (see `run`)."""

EPOCHS = 24  # training epochs of the demo's model (`mgsv demo --epochs`); kept here so the CLI imports nothing heavy
