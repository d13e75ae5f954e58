"""The swarm transport's settings and its job CA: a bucket size libtorrent cannot cut pieces of, or a
job without a token, is refused when the settings load; every holder of the job's token issues node
certificates that the job's root accepts, and no one else can."""

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from pydantic import ValidationError

from services.learner.settings import LearnerSettings
from shared.weights.settings import WeightsSettings
from shared.weights.transports.swarm_ca import JobAuthority


def test_the_swarm_needs_power_of_two_buckets():
    assert WeightsSettings(transport="swarm", bucket_mb=16).bucket_bytes == 16 << 20
    assert WeightsSettings(transport="swarm", bucket_mb=0.25).bucket_bytes == 256 << 10
    assert WeightsSettings(transport="http", bucket_mb=10).bucket_mb == 10  # any size elsewhere
    with pytest.raises(ValidationError, match="bucket_mb must be a power of two .* not 10"):
        WeightsSettings(transport="swarm", bucket_mb=10)


def test_a_swarm_job_needs_a_token():
    with pytest.raises(ValidationError, match="swarm needs auth.token"):
        LearnerSettings(weights={"transport": "swarm"})
    assert LearnerSettings(weights={"transport": "swarm"}, auth={"token": "t"}).weights.transport == "swarm"


def test_token_holders_issue_certificates_of_the_jobs_root_and_others_cannot():
    root = x509.load_pem_x509_certificate(JobAuthority("job-token").root_certificate().encode())
    # A worker derives the same CA from the token alone: its certificate is signed by the learner's root.
    worker = x509.load_pem_x509_certificate(JobAuthority("job-token").issue_node().certificate.encode())
    worker.verify_directly_issued_by(root)
    outsider = x509.load_pem_x509_certificate(JobAuthority("another-token").issue_node().certificate.encode())
    with pytest.raises(InvalidSignature):
        outsider.verify_directly_issued_by(root)
    with pytest.raises(ValueError, match="auth.token"):
        JobAuthority("")
