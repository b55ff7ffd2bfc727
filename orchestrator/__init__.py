"""Campaign spec, grid planning, Ray Tune execution, the Parquet result store, the CLI."""
