"""The HTTP contracts of our services and their clients, one module per service (services never
import each other, so what two of them share lives here): reward, rollout, learner, and the weights
contract between the learner and the workers. http.py holds what every client shares."""
