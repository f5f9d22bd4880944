"""What the measuring commands, `picsearch bench` and `picsearch eval`, share."""
