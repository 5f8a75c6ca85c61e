"""Where LRA's released data comes from (Tay et al. 2021): one archive holds the ListOps TSVs,
the AAN retrieval pairs and the Pathfinder/Path-X image folders. Readers name it in their
missing-data errors; nothing here downloads."""

URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
HOW_TO_GET = f"download LRA's release ({URL}, unpack it with `tar xzf`)"
