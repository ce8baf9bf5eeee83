"""The executor's core: chunks, timeline and splicing, interpolation, safety filter. No rclpy."""
