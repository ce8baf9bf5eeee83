"""ROS 2 nodes: thin wiring of topics, parameters and timers to the core in control/, model/ and sim/."""
