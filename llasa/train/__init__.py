"""Training: the Llasa LM and the X-codec2 codec."""
