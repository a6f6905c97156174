"""Getting a package into the BioImage Model Zoo: the zoo's checks run here first (``wnet-zoo upload --dry-run``)."""
