"""`make image-test`: the container image built with buildah and run (check_image.py)."""
