"""mridomain.synth"""
