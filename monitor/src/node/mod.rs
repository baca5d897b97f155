//! Host facts: kubelet token volumes, cgroup -> pod (issue 3).
