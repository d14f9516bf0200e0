"""Sources: everything that turns an input (capture, flow file) into chunks for the core."""
