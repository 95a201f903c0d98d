"""DDColor (Kang et al., ICCV 2023; piddnad/DDColor): network, checkpoint layout and pipeline."""
