"""Training: one core (core.py: the loop, checkpoints, log, resume; args.py: the option sections
every recipe shares) under two recipes, the Llasa LM (lm.py, its batches in lm_data.py) and the
X-codec2 codec (codec.py, its batches in codec_data.py)."""
