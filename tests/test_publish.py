"""Publication of the bundled models: the cards in the checkout are current, the general model's card and
eval.json hold these weights' numbers, specialists point to it, installing a blind run is one command, and
``pdeblocks publish`` tags the commit with the bundled revision."""
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pdeblocks.cards as cards
import pdeblocks.hub as hub
import pdeblocks.publish as publish
from pdeblocks.cli import main
from pdeblocks.data.families import FAMILIES, make_family_signals
from pdeblocks.data.signals import psnr
from pdeblocks.hub import BUNDLED_DIR, from_pretrained, list_pretrained
from pdeblocks.models.blind import BlindDenoiser1D

ROOT = Path(__file__).resolve().parent.parent
GENERAL, SPECIALIST = 'denoiser-1d', 'denoiser-1d-piecewise-constant'


def general_eval():
    return json.loads((BUNDLED_DIR / GENERAL / 'eval.json').read_text())


@pytest.mark.parametrize('name', list_pretrained())
def test_checked_in_cards_are_the_rendered_ones(name):
    """model_cards/<name>/README.md is what write_card renders from the bundled files today (regenerate with
    ``python model_cards/generate.py`` after installing or re-evaluating a model)."""
    assert (ROOT / 'model_cards' / name / 'README.md').read_text() == cards.render_card(name)


def test_general_eval_json_model_column_is_these_weights():
    """The per-family model column of the bundled eval.json, recomputed here from the bundled weights on the
    benchmark's test signals (32 per family and σ), and the peers equal to benchmarks/results' JSON."""
    fam = general_eval()['families']
    assert fam['count'] == 32 and fam['peers'] == ['tv', 'perona_malik', 'bayes_shrink']
    assert set(fam['table']) == set(FAMILIES)
    model = from_pretrained(GENERAL)
    for family, sigma in (('oscillations', '0.1'), ('piecewise_constant', '0.05')):
        s = make_family_signals(family, 'test', 32, 1024, float(sigma))
        with torch.no_grad():
            out = model(torch.from_numpy(s.noisy)[:, None])[:, 0].numpy()
        row = fam['table'][family][sigma]
        assert row['model'] == pytest.approx(float(psnr(out, s.clean).mean()), abs=1e-3)
        assert row['noisy'] == pytest.approx(float(psnr(s.noisy, s.clean).mean()), abs=1e-9)
    bench = json.loads((ROOT / fam['source']).read_text())
    for r in bench['families']:
        row = fam['table'][r['family']][str(r['sigma'])]
        assert {k: row[k] for k in fam['peers']} == {k: r['psnr'][k] for k in fam['peers']}
        assert row['best_peer'] == max(r['psnr'][k] for k in fam['peers'])


def test_general_card_tables_and_metadata_come_from_eval_json():
    ev = general_eval()
    card = cards.render_card(GENERAL)
    fam = ev['families']
    for family, rows in fam['table'].items():
        for sigma, r in rows.items():
            line = next(ln for ln in card.splitlines() if ln.startswith(f"| {family.replace('_', ' ')} | {r['noisy']:.2f}")
                        and f"**{r['model']:.2f}**" in ln)
            assert f"| {r['model'] - max(r['tv'], r['perona_malik'], r['bayes_shrink']):+.2f} |" in line
            # model-index: one result per family and σ, its value the eval.json's
            assert re.search(rf"name: {family.replace('_', ' ')} signals \(families\), length 1024, σ = {sigma}\n"
                             rf"(?:.*\n){{3}}    metrics:\n    - type: psnr\n      value: {round(r['model'], 2)}\n", card)
    for sigma in ('0.05', '0.1'):
        margin = np.mean([rows[sigma]['model'] - rows[sigma]['best_peer'] for rows in fam['table'].values()])
        assert f"**{margin:+.2f}** |" in card
    # which model: the three bundled denoisers, each with its mean over the families and today's σ = 0.1 figure
    assert '## Which model to use' in card
    for name in (GENERAL, SPECIALIST, 'denoiser-1d-multigrid'):
        todays = json.loads((BUNDLED_DIR / name / 'eval.json').read_text())['evaluation']['table']
        key = 'model' if name == GENERAL else None
        means = [np.mean([rows[s][key] if key else rows[s]['others'][name] for rows in fam['table'].values()])
                 for s in ('0.05', '0.1')]
        row = next(ln for ln in card.splitlines() if ln.startswith(f'| **{name}**' if name == GENERAL else f'| `{name}`'))
        assert row.endswith(f"| {means[0]:.2f} | {means[1]:.2f} | {todays['piecewise_constant']['0.1']['model']:.2f} |")
    assert "from_pretrained('pdeblocks/denoiser-1d', revision='v1')" in card and 'blind-denoising' in card
    assert 'QuadChirp' in card and 'examples.png' in card
    # the architecture sentence follows config.json: the segmentation tail with its prior, the spectral σ̂ and the
    # residual tail (v5), and v3 and v4 as earlier revisions
    cfg = json.loads((BUNDLED_DIR / GENERAL / 'config.json').read_text())
    assert ("a Bayesian segmentation tail: w = E[s | u⁰]" in card
            and f"Bernoulli(1/{round(1 / cfg['segment_hazard'])}) process, segments of at most "
                f"{cfg['segment_max_length']} samples" in card)
    assert "`from_pretrained('pdeblocks/denoiser-1d', revision='v3')` gives the earlier `denoiser-1d-v3`" in card
    assert "`from_pretrained('pdeblocks/denoiser-1d', revision='v4')` gives the earlier `denoiser-1d-v4`" in card
    assert (f"and last a residual tail: what the network took for noise but stands {cfg['residual_threshold']:g} times "
            f"above the noise floor" in card and f"a Parseval frame of {cfg['residual_frame']}-sample windows" in card)
    assert "σ̂ the noise estimate min(σ̂_D, σ̂_S)" in card and '**Oscillations up to Nyquist**' in card
    assert 'Below the noisy input' not in card and 'no training step of its own' in card
    v3_card, v4_card = cards.render_card('denoiser-1d-v3'), cards.render_card('denoiser-1d-v4')
    assert 'segmentation tail' not in v3_card and 'segmentation tail' in v4_card
    for old in (v3_card, v4_card):
        assert 'residual tail' not in old and 'min(σ̂_D, σ̂_S)' not in old and 'Below the noisy input on QuadChirp' in old
    # an earlier revision's card points to the later general model, and says by how much it is ahead
    later = next(ln for ln in v3_card.splitlines() if ln.startswith(f'* `{GENERAL}`:'))
    assert later.startswith(f'* `{GENERAL}`: a later general blind model, it − denoiser-1d-v3: +')
    assert later.endswith('; use it instead.')
    # v4 and v5 share their weights: in v4's card the later v5 equals it on the families and piecewise constant to
    # rounding, never printed as −0.00, and is ahead on the classic signals (QuadChirp)
    v5_line = next(ln for ln in v4_card.splitlines() if ln.startswith('* `denoiser-1d-v5`:'))
    assert v5_line.startswith('* `denoiser-1d-v5`: a later general blind model, it − denoiser-1d-v4: +0.00 dB averaged '
                              'over the families') and '-0.00' not in v4_card
    assert float(re.search(r'and \+(\d+\.\d+) dB on the classic test signals', v5_line).group(1)) > 0.5
    assert 'not scale-free' not in later


def test_specialists_point_to_the_general_model():
    specialist = cards.render_card(SPECIALIST)
    assert "**This is revision `v1` of `pdeblocks/denoiser-1d`**" in specialist
    assert "from_pretrained('pdeblocks/denoiser-1d', revision='v1')" in specialist
    assert 'use the general blind denoiser [`denoiser-1d`]' in specialist
    multigrid = cards.render_card('denoiser-1d-multigrid')
    assert 'use the general blind denoiser [`denoiser-1d`]' in multigrid and 'This is revision' not in multigrid
    assert cards.pointer_note(GENERAL) == '' and cards.general_model() == GENERAL
    assert cards.revision_of(SPECIALIST) == ('pdeblocks/denoiser-1d', 'v1') and cards.revision_of(GENERAL) is None
    assert cards.revision_of('denoiser-1d-v3') == ('pdeblocks/denoiser-1d', 'v3')
    assert cards.revision_of('denoiser-1d-v4') == ('pdeblocks/denoiser-1d', 'v4')


def test_hub_tags_and_upload_tags_the_commit(tmp_path, monkeypatch):
    assert publish.hub_tag(GENERAL, 'pdeblocks/denoiser-1d') == 'v6'
    assert publish.hub_tag('denoiser-1d-v4', 'pdeblocks/denoiser-1d') == 'v4'
    assert publish.hub_tag('denoiser-1d-v3', 'pdeblocks/denoiser-1d') == 'v3'
    assert publish.hub_tag('denoiser-1d-v2', 'pdeblocks/denoiser-1d') == 'v2'
    assert publish.hub_tag(SPECIALIST, 'pdeblocks/denoiser-1d') == 'v1'
    assert publish.hub_tag(SPECIALIST, 'pdeblocks/denoiser-1d-piecewise-constant') is None
    assert publish.hub_tag('denoiser-1d-multigrid', 'pdeblocks/denoiser-1d') is None
    calls = []

    class FakeApi:       # records what would go to the Hub
        def create_repo(self, repo_id, **kw):
            calls.append(('create_repo', repo_id))

        def upload_folder(self, repo_id, folder_path, **kw):
            calls.append(('upload_folder', repo_id, folder_path))
            return type('Info', (), {'oid': 'f' * 40, 'commit_url': f'https://hub/{repo_id}/commit/' + 'f' * 40})()

        def create_tag(self, repo_id, *, tag, revision, **kw):
            calls.append(('create_tag', repo_id, tag, revision))

    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, 'HfApi', FakeApi)
    url = publish.upload(tmp_path, 'pdeblocks/denoiser-1d', 'v2')
    assert calls == [('create_repo', 'pdeblocks/denoiser-1d'), ('upload_folder', 'pdeblocks/denoiser-1d', str(tmp_path)),
                     ('create_tag', 'pdeblocks/denoiser-1d', 'v2', 'f' * 40)]
    assert url.endswith('f' * 40)
    calls.clear()
    publish.upload(tmp_path, 'someone/x')
    assert [c[0] for c in calls] == ['create_repo', 'upload_folder']


def test_publish_dry_run_names_the_tag(tmp_path, capsys):
    out = tmp_path / 'hub'
    assert main(['publish', SPECIALIST, '--repo-id', 'pdeblocks/denoiser-1d', '--dry-run', '--out', str(out)]) == 0
    assert "Hub tag 'v1'" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(publish.HUB_FILES)
    assert type(from_pretrained(out)).__name__ == 'Denoiser1D'


# ---------------------------------------------------------------- installing a blind run: one command
sys.path.insert(0, str(ROOT / 'model_cards'))


def tiny_blind_run(folder: Path, **extra) -> BlindDenoiser1D:
    torch.manual_seed(0)
    m = BlindDenoiser1D(scheme='explicit', scale=4, channels=4, hidden_channels=4, blocks=2, **extra)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    m.eval().save_pretrained(folder / 'model')
    run = {k: v for k, v in general_eval().items() if k not in ('evaluation', 'families')}
    # the refined recipe's loss (train/recipes.LOSSES): the card names every loss (of a run that trained: the
    # bundled model's own recipe has no step)
    run['recipe'] = dict(run['recipe'], loss='log_relative_mse' if extra else 'relative_mse', steps=100)
    (folder / 'eval.json').write_text(json.dumps(run))
    return m


@pytest.fixture(params=[{}, dict(refine_cycles=1, refine_steps=2, refine_channels=2)], ids=['explicit', 'refine'])
def install_setup(tmp_path, monkeypatch, request):
    """A bundled folder with the specialist only, a tiny blind run (without and with the full-resolution
    refinement stage), and a one-row benchmark JSON."""
    import generate
    root = tmp_path / 'pretrained'
    shutil.copytree(BUNDLED_DIR / SPECIALIST, root / SPECIALIST)
    for module in (hub, publish, generate):
        monkeypatch.setattr(module, 'BUNDLED_DIR', root)
    monkeypatch.setattr(generate, 'CARDS', tmp_path / 'cards')     # never the checkout's model_cards/
    model = tiny_blind_run(tmp_path / 'run', **request.param)
    bench = json.loads((ROOT / 'benchmarks' / 'results' / 'denoise_general.json').read_text())
    bench['families'] = [r for r in bench['families'] if (r['family'], r['sigma']) == ('smooth_trend', 0.1)]
    bench['classics'] = [r for r in bench['classics'] if (r['signal'], r['sigma']) == ('Bumps', 0.05)]
    (tmp_path / 'bench.json').write_text(json.dumps(bench))
    return generate, root, model, tmp_path


def test_install_blind_run_is_one_command(install_setup):
    generate, root, model, tmp = install_setup
    checkout_card = (ROOT / 'model_cards' / GENERAL / 'README.md').read_bytes()
    generate.main(['--install', str(tmp / 'run'), GENERAL, '--benchmark', str(tmp / 'bench.json')])
    assert (ROOT / 'model_cards' / GENERAL / 'README.md').read_bytes() == checkout_card
    assert (tmp / 'cards' / GENERAL / 'README.md').read_text() == cards.render_card(GENERAL)
    assert type(hub.from_pretrained(GENERAL)) is BlindDenoiser1D
    ev = json.loads((root / GENERAL / 'eval.json').read_text())
    row = ev['families']['table']['smooth_trend']['0.1']
    s = make_family_signals('smooth_trend', 'test', 32, 1024, 0.1)
    with torch.no_grad():
        out = model(torch.from_numpy(s.noisy)[:, None])[:, 0].numpy()
    assert row['model'] == pytest.approx(float(psnr(out, s.clean).mean()), abs=1e-3)
    assert set(row['others']) == {SPECIALIST} and not ev['families']['benchmark_model']['same_weights']
    assert set(ev['families']['classics']) == {'Bumps'}
    todays = ev['evaluation']['table']['piecewise_constant']['0.1']
    spec = json.loads((root / SPECIALIST / 'eval.json').read_text())['evaluation']['table']['piecewise_constant']['0.1']
    assert todays['tv'] == spec['tv'] and todays['model'] != spec['model']
    recipe = general_eval()['recipe']['name']     # the tiny run carries the bundled general model's recipe
    assert ev['recipe']['name'] == recipe and hub.published_name(recipe) == GENERAL
    # the card of the installed model says its model column is not the benchmark's own
    text = cards.render_card(GENERAL)
    assert 'its own model column is of other weights' in text and '| smooth trend |' in text
    assert ('FED cycles of 2 edge-preserving diffusion steps' in text) == bool(model.refine is not None)
    assert ('loss log(‖net(f) − u‖² / ‖f − u‖²) per signal' in text) == bool(model.refine is not None)
    cards.write_card(GENERAL, tmp / 'card')
    assert sorted(p.name for p in (tmp / 'card').iterdir()) == ['README.md', 'examples.png', 'flux.png']
    # a revisions map already there is kept by a re-install
    (root / GENERAL / 'revisions.json').write_text(json.dumps(
        dict(repo_id='pdeblocks/denoiser-1d', current='v2', revisions={'v1': SPECIALIST, 'v2': GENERAL})))
    generate.install(str(tmp / 'run'), GENERAL, benchmark=tmp / 'bench.json')
    assert hub.bundled_revisions(GENERAL)['revisions']['v1'] == SPECIALIST


def test_install_refuses_a_benchmark_of_other_signals(install_setup):
    generate, root, _, tmp = install_setup
    bench = json.loads((tmp / 'bench.json').read_text())
    bench['families'][0]['psnr']['bayes_shrink'] += 0.5
    (tmp / 'bench.json').write_text(json.dumps(bench))
    with pytest.raises(ValueError, match=r'smooth_trend σ = 0.1 BayesShrink: stored .* recomputed'):
        generate.install(str(tmp / 'run'), GENERAL, benchmark=tmp / 'bench.json')
    assert not (root / GENERAL).exists()       # nothing installed
    with pytest.raises(ValueError, match='no benchmark results at'):
        generate.install(str(tmp / 'run'), GENERAL, benchmark=tmp / 'missing.json')


def test_every_training_loss_has_a_card_name():
    from pdeblocks.train.recipes import LOSSES
    assert set(LOSSES) <= set(cards.LOSS_NAMES)
