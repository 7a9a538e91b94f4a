"""MNIST with HE FedAvg: hefl's example Flower app."""
