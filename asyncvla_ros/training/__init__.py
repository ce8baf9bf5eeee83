"""Training without ROS: LeRobot v3.0 data, SO-101 demonstrations from the sim expert, trainers."""
