"""NAR Studio: Neighboring Autoregressive image generation, raster and ZipAR decoding."""
